"""Atomic file writes: produce and validate a temporary file next to the target, then rename it
into place, so a crash or a failed validation never leaves a half-written or unchecked file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from odegrad.errors import InvalidInput


def output_path(path: str | os.PathLike) -> Path:
    """Check that ``path`` names a file in an existing directory."""
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidInput("path", type(path).__name__, "a file path (str or os.PathLike)")
    target = Path(path)
    if target.is_dir():
        raise InvalidInput("path", str(target), "a file path, not a directory")
    if not target.parent.is_dir():
        raise InvalidInput("path", str(target), f"a file in an existing directory ({target.parent} does not exist)")
    return target


def existing_file(path: str | os.PathLike, what: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidInput("path", type(path).__name__, f"the path of {what}")
    source = Path(path)
    if not source.is_file():
        raise InvalidInput("path", str(source), f"an existing file ({what})")
    return source


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; on normal exit it replaces ``path``
    (``os.replace``, atomic on POSIX and Windows), on an exception it is deleted."""
    target = output_path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
