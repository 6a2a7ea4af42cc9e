"""Atomic writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process's umask (there is no way to read it without setting it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success fsync it and rename it over
    ``target``. On error the temporary file is removed and ``target`` is untouched.

    The file gets the mode a plain ``open`` would give it (0o666 less the umask), not
    ``mkstemp``'s owner-only 0o600."""
    target = Path(target)
    mask = _umask()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~mask)
        _fsync_file(tmp)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: Path, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it replaces ``target`` whole.

    An existing ``target`` is moved aside first and removed only after the new one is in
    place, so a crash leaves either the old folder or the new one. Folders and files get the
    modes ``mkdir`` and ``open`` would give them (0o777 and 0o666 less the umask), not
    ``mkdtemp``'s owner-only 0o700 (nor the 0o600 some writers use)."""
    target = Path(target)
    mask = _umask()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                os.chmod(f, 0o666 & ~mask)  # some writers (safetensors) make theirs 0o600
                _fsync_file(f)
            elif f.is_dir():
                os.chmod(f, 0o777 & ~mask)
        os.chmod(tmp, 0o777 & ~mask)
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
