"""What training shows while it runs: one plain line per epoch, and a batch bar where one works.

Everything goes through the ``logging`` logger ``"polytask"`` at INFO level, so an application
routes, filters or silences it like any other log (``training.progress: false`` turns it off
at the source). When neither that logger nor the root logger has a handler, the first fit
gives ``"polytask"`` one that prints the bare message to stderr, so a script or a notebook
sees its epochs without configuring anything; ``polytask train`` prints them to stdout, so
``polytask train RUN > log`` keeps a line per epoch.

The epoch line fits in 80 columns: it wraps between fields, never inside a number.

Within an epoch a batch bar is drawn on a terminal (rich) and in a notebook (``tqdm.auto``,
when tqdm is installed); it is removed when the epoch's line is written.
"""

from __future__ import annotations

import logging
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import IO, Any

logger = logging.getLogger("polytask")

WIDTH = 80

EpochRecord = dict[str, Any]
"""One epoch of the history: ``epoch``, ``train_loss`` ``{task: mean loss}``,
``train_samples_per_s``, ``seconds``, ``lr``, the weighting's report, and with a validation
split ``validation`` ``{task: {metric: value}}`` and ``monitor`` ``{name: value}``."""

EpochCallback = Callable[[EpochRecord], None]
"""Called with each epoch's record once it is complete (validation included); under torchrun
on rank 0 only. What `MultiTaskModel.fit` (``callbacks=[...]``) hands to loggers."""


class _StreamHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` (or stdout) as it is when a record arrives, so a replaced
    stream (pytest's capture, a notebook's) is the one written to."""

    def __init__(self, stdout: bool = False) -> None:
        super().__init__()
        self._stdout = stdout
        self.setFormatter(logging.Formatter("%(message)s"))  # the bare message

    @property
    def stream(self) -> IO[str]:
        return sys.stdout if self._stdout else sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ assigns it
        pass


def ensure_visible() -> None:
    """Give the ``polytask`` logger a plain handler (stderr) if no handler would show its INFO
    lines: neither it nor the root logger has one. An application that configured logging
    keeps full control."""
    if logger.handlers or logging.getLogger().handlers:
        return
    logger.addHandler(_StreamHandler())
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


@contextmanager
def printed_to_stdout() -> Iterator[None]:
    """Inside the block the ``polytask`` log's INFO lines are printed to stdout, bare (what
    ``polytask train`` does); the logger is as it was after it."""
    handler = _StreamHandler(stdout=True)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def wrap(fields: list[str], width: int = WIDTH) -> str:
    """``fields`` joined by two spaces into lines of at most ``width`` columns, breaking only
    between fields (continuation lines indented by two); a field longer than a line stands
    alone on its line, whole."""
    lines: list[str] = []
    line = ""
    for field in fields:
        candidate = f"{line}  {field}" if line else field
        if line and len(candidate) > width:
            lines.append(line)
            line = "  " + field
        else:
            line = candidate
    if line:
        lines.append(line)
    return "\n".join(lines)


def _number(value: float) -> str:
    return "nan" if value != value else f"{value:.4f}"


def epoch_line(record: Mapping[str, Any], epochs: int, width: int = WIDTH) -> str:
    """The progress line of one epoch's record, wrapped to ``width`` columns."""
    fields = [
        f"epoch {record['epoch']}/{epochs}",
        f"{record.get('seconds', 0.0):.1f}s",
        f"{record['train_samples_per_s']:,.0f} samples/s",
        "loss " + " ".join(f"{t}={_number(v)}" for t, v in record["train_loss"].items()),
    ]
    for name, value in record.get("monitor", {}).items():
        fields.append(f"val {name}={_number(value)}")
    if record.get("skipped_batches"):
        fields.append(f"skipped {record['skipped_batches']} batch(es)")
    # the loss field may be long (many tasks): let it break between tasks
    out: list[str] = []
    for field in fields:
        out += textwrap.wrap(field, width - 2, break_long_words=False, break_on_hyphens=False)
    return wrap(out, width)


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ip = getattr(shell, "get_ipython", lambda: None)()
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def _no_bar(completed: int) -> None:
    """Advancing where no bar is drawn: nothing to do."""


@contextmanager
def batch_bar(
    enabled: bool, description: str, total: int, start: int
) -> Iterator[Callable[[int], None]]:
    """A transient bar over one epoch's batches on a terminal or in a notebook, nothing
    elsewhere; yields ``advance(completed)``, which moves it."""
    if not enabled or not (_in_notebook() or sys.stderr.isatty()):
        yield _no_bar
        return
    if _in_notebook():
        try:
            from tqdm.auto import tqdm
        except ImportError:
            yield _no_bar
            return
        with tqdm(total=total, initial=start, desc=description, leave=False) as bar:
            yield lambda n: bar.update(n - bar.n)
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} batches"),
        TimeRemainingColumn(),
        transient=True,
    ) as progress:
        handle = progress.add_task(description, total=total, completed=start)
        yield lambda n: progress.update(handle, completed=n)
