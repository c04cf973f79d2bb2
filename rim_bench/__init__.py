"""rim-bench: benchmarking training-free open-vocabulary semantic segmentation, built around RIM."""

__version__ = "0.1.0"
