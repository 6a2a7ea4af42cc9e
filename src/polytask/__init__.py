"""polytask: multi-task learning for tabular data in PyTorch."""

from polytask._version import __version__

__all__ = ["__version__"]
