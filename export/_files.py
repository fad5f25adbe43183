"""Atomic file writes: produce and validate a temporary file next to the target, then rename it
into place, so a crash or a failed validation never leaves a half-written or unchecked file.

The temporary is ``.<name>.odegrad-<host>-<pid>-<token>.tmp`` in the target's directory, created
with the permissions ``open()`` would give (``0o666 & ~umask``, or the mode of the file it
replaces). A process killed mid-export (``kill -9``) cannot delete its temporary; the next write
to the same path removes such leftovers once the process that wrote them has exited (or, for a
temporary written on another host or where process ids cannot be probed safely — Windows, where
``os.kill(pid, 0)`` would terminate the process — once it is older than :data:`STALE_AFTER` seconds).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from odegrad.errors import ExportError, InvalidInput

STALE_AFTER = 3600.0  # seconds; a live export of a large model may run for minutes
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def output_path(path: str | os.PathLike) -> Path:
    """Check that ``path`` names a file this process may write, in an existing directory.

    Raises :class:`InvalidInput` for a path that is not a file name and :class:`ExportError`
    (naming the path) when the directory or an existing file there is not writable — before any
    export work is done.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidInput("path", type(path).__name__, "a file path (str or os.PathLike)")
    target = Path(path)
    if target.is_dir():
        raise InvalidInput("path", str(target), "a file path, not a directory")
    if not target.parent.is_dir():
        reason = "is not a directory" if target.parent.exists() else "does not exist"
        raise InvalidInput("path", str(target), f"a file in an existing directory ({target.parent} {reason})")
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise ExportError(f"cannot write {target}: the directory {target.parent} is not writable")
    if target.exists() and not os.access(target, os.W_OK):
        raise ExportError(f"cannot write {target}: the file is read-only")
    return target


def existing_file(path: str | os.PathLike, what: str) -> Path:
    """Check that ``path`` names an existing, readable file (``what`` describes it in the error)."""
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidInput("path", type(path).__name__, f"the path of {what}")
    source = Path(path)
    if not source.is_file():
        raise InvalidInput("path", str(source), f"an existing file ({what})")
    if not os.access(source, os.R_OK):
        raise InvalidInput("path", str(source), f"a readable file ({what}); it is not readable")
    return source


def _temporaries(target: Path) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(target.name)}\.odegrad-(?P<host>[0-9a-f]{{8}})-(?P<pid>\d+)-[0-9a-f]+\.tmp")


def _running(pid: int) -> bool:
    """Whether a process with this id exists (POSIX only: signal 0 probes without signalling)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Delete temporaries of earlier writes to ``target`` whose writer has exited (see the module
    docstring); a concurrent write's temporary is left alone. Returns the removed paths."""
    pattern = _temporaries(target)
    removed = []
    for candidate in target.parent.glob(f".{glob.escape(target.name)}.odegrad-*.tmp"):
        match = pattern.fullmatch(candidate.name)
        if match is None:
            continue
        with contextlib.suppress(OSError):  # vanished, or not ours to delete: leave it
            if match["host"] == _HOST and os.name == "posix":
                stale = not _running(int(match["pid"]))
            else:
                stale = time.time() - candidate.stat().st_mtime > STALE_AFTER
            if stale:
                candidate.unlink()
                removed.append(candidate)
    return removed


def _create_temporary(target: Path) -> Path:
    """An empty new file next to ``target`` with the mode ``open(target, "w")`` would give."""
    mode = target.stat().st_mode & 0o777 if target.exists() else 0o666  # umask applies to 0o666
    tmp = target.parent / f".{target.name}.odegrad-{_HOST}-{os.getpid()}-{secrets.token_hex(4)}.tmp"
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        if mode != 0o666:
            os.chmod(tmp, mode)
    except OSError as error:
        raise ExportError(f"cannot write {target}: {error.strerror or error}") from error
    return tmp


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; on normal exit it replaces ``path``
    (``os.replace``, atomic on POSIX and Windows), on an exception it is deleted. Leftover
    temporaries of earlier, killed writes to ``path`` are removed first."""
    target = output_path(path)
    remove_stale_temporaries(target)
    tmp = _create_temporary(target)
    try:
        yield tmp
        try:
            os.replace(tmp, target)
        except OSError as error:
            raise ExportError(f"cannot write {target}: {error.strerror or error}") from error
    finally:
        tmp.unlink(missing_ok=True)
