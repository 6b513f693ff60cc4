"""Data: dataset metadata (keypoints, classes, flip pairs), synthetic humans, shards and batching. The datasets and
transforms that training reads live in :mod:`sapiens2.training.datasets` and :mod:`sapiens2.training.transforms`."""
