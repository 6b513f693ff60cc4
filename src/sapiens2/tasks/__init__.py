"""Pure pre- and post-processing per task (pose crops and heatmap codec, person detection, seg and dense maps,
typed results): arrays and tensors in, arrays and results out. No model loading (a contract in pyproject.toml);
:mod:`sapiens2.inference` composes these with the models."""
