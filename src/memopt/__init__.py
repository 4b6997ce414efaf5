"""memopt: memory-efficient and accelerated first-order optimizers for PyTorch."""

__version__ = "0.1.0"
