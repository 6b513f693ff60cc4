"""Task-specific pre- and post-processing (pose crops and heatmap codec, person detection)."""
