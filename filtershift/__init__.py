"""filtershift: filter databases of trained CNN checkpoints and the shift of their 3x3 filters."""

__version__ = "0.1.0"
