"""Atomic writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def leftover_pattern(name: str) -> re.Pattern[str]:
    """Names a write of ``name`` killed midway leaves beside it: ``.NAME.<8 random>.tmp``
    (the file or folder being written: `tempfile`'s 8 characters) and
    ``.NAME.old.<32 hex>.del`` (a previous folder being removed)."""
    n = re.escape(name)
    return re.compile(rf"\.{n}\.[a-z0-9_]{{8}}\.tmp|\.{n}\.old\.[0-9a-f]{{32}}\.del")


def clean_stale(target: Path) -> list[str]:
    """Remove what killed writes of ``target`` left beside it (`leftover_pattern`); never
    `set_aside`'s ``.NAME.old``, the only copy of a folder whose swap was cut short. Returns
    the names removed. Called by every atomic write, so leftovers last until the next
    write of the same target."""
    pattern = leftover_pattern(target.name)
    removed: list[str] = []
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not pattern.fullmatch(entry.name):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            continue
        removed.append(entry.name)
    return removed


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
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
    clean_stale(target)
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


def set_aside(target: Path) -> Path:
    """Where `atomic_dir` keeps the previous ``target`` while it swaps in the new one."""
    return target.with_name(f".{target.name}.old")


def _discard(folder: Path) -> None:
    """Remove ``folder``, renaming it first so its name never holds a half-removed folder."""
    trash = folder.with_name(f"{folder.name}.{uuid.uuid4().hex}.del")  # leftover_pattern
    try:
        os.replace(folder, trash)
    except OSError:
        return  # left whole; the next atomic_dir of the same target removes it
    shutil.rmtree(trash, ignore_errors=True)


def restore_interrupted(target: Path) -> bool:
    """Put back the folder that an `atomic_dir` interrupted between its two renames left
    aside (no ``target``, the previous folder whole as `set_aside`'s name); returns whether
    there was one."""
    old = set_aside(target)
    if target.exists() or not old.is_dir():
        return False
    os.replace(old, target)
    _fsync_dir(target.parent)
    return True


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it replaces ``target`` whole.

    An existing ``target`` is renamed aside (`set_aside`), the new folder renamed into its
    place, then the old one removed. A crash between the two renames leaves no ``target``
    but the old folder whole beside it; the next ``atomic_dir`` of that target renames it
    back first (`restore_interrupted`), so a failed or crashed write never loses the
    previous folder. Folders and files get the modes ``mkdir`` and ``open`` would give them
    (0o777 and 0o666 less the umask), not ``mkdtemp``'s owner-only 0o700 (nor the 0o600
    some writers use)."""
    target = Path(target)
    mask = _umask()
    target.parent.mkdir(parents=True, exist_ok=True)
    restore_interrupted(target)
    clean_stale(target)
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
            old = set_aside(target)
            if old.exists():  # a crash after a swap, before its old folder was removed
                _discard(old)
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            restore_interrupted(target)
            raise
        _fsync_dir(target.parent)
        if old is not None:
            _discard(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
