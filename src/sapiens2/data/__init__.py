"""Data: dataset metadata (keypoints, classes), synthetic humans, loaders."""
