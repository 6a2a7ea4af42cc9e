"""Pictures of runs, drawn with matplotlib (the optional extra ``plot``)."""

from __future__ import annotations

from typing import Any

from polytask.errors import MissingExtraError, install_hint


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend; a missing matplotlib is a
    `MissingExtraError` naming the extra."""
    try:
        import matplotlib
    except ImportError:
        raise MissingExtraError(f"plots need matplotlib: {install_hint('plot')}") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
