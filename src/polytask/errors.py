"""polytask's own exceptions.

Every error a user can cause is one of these, and its message names the thing that was wrong,
what was expected and what was found.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class PolytaskError(ValueError):
    """Base class for errors caused by input a user can fix."""


class ConfigError(PolytaskError):
    """A run file, a Python API argument or a CLI override is invalid."""


class MissingExtraError(ConfigError):
    """A configured feature needs an optional dependency (a pip extra) that is not installed."""


class DataError(PolytaskError):
    """A table does not match the schema (missing column, bad label, empty split, ...)."""


class NotFittedError(PolytaskError, AttributeError):
    """A method that needs a fitted model was called before ``fit``."""


class ModelFileError(PolytaskError):
    """A saved model or checkpoint is missing, corrupt or of an unsupported format version."""


class OutputError(PolytaskError):
    """An output path cannot be written (exists and may not be replaced, no permission, no
    space, a name too long, ...)."""


class TrainingError(PolytaskError):
    """Training cannot go on (for example a NaN loss)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped `MultiTaskModel.fit` after the step in progress.

    A `KeyboardInterrupt`, so a script stops as it would; the model it interrupted is fitted
    all the same, with the best epoch's weights so far (the last weights without a validated
    epoch), ``interrupted_`` True. ``checkpoint`` is the checkpoint written on the way out
    (checkpoints on), from which ``fit(..., resume=True)`` continues; ``saved`` is where
    `polytask train` saved the model."""

    def __init__(
        self, *, epoch: int, step: int, best_epoch: int | None, checkpoint: Path | None
    ) -> None:
        self.epoch, self.step, self.best_epoch = epoch, step, best_epoch
        self.checkpoint = checkpoint
        self.saved: Path | None = None
        kept = f"checkpoint {checkpoint}" if checkpoint is not None else "no checkpoint"
        super().__init__(f"training interrupted at epoch {epoch}, step {step} ({kept})")


def install_hint(extra: str) -> str:
    """How to install a pip extra, from PyPI and from a source checkout (where the package
    itself was installed with ``pip install -e .``)."""
    return f"pip install 'polytask[{extra}]' (from a source checkout: pip install -e '.[{extra}]')"


def os_reason(err: OSError) -> str:
    """An OS error's reason in a few words (``No space left on device``), without the
    path the message around it already names."""
    return err.strerror or str(err) or type(err).__name__


def closest(name: str, candidates: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest candidate, or ``""`` when none is close."""
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {matches[0]!r}?" if matches else ""
