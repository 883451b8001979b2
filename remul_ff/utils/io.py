"""File helpers: atomic writes so that an interrupted run never leaves a half-written file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` that is renamed onto ``path`` on success.

    The temporary file lives in the same directory so that the final ``os.replace`` is atomic.
    If the body raises, the temporary file is removed and ``path`` is left untouched.

    Args:
        path: Destination file.

    Yields:
        A temporary path to write to; it keeps the destination's suffix so that writers that
        pick a format from the extension (``ase.io.write``) behave the same.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates the file owner-only; give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that :func:`atomic_path` left in ``folder`` when a run was killed mid-write.

    Call it only on a folder that no other running process writes to. Returns the removed paths.
    """
    stale = [p for p in Path(folder).glob(".*.tmp*") if p.is_file() and ".tmp" in p.name]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def check_output_path(path: str | os.PathLike, option: str, folder: bool = False) -> None:
    """Raise :class:`~remul_ff.errors.RemulError` before any work when ``path`` cannot be written.

    Args:
        path: The file (or, with ``folder``, the folder) a command will write.
        option: How the user gave it (``"--json"``, ``"output_dir"``), for the message.
        folder: ``path`` is a folder to create or fill, not a file.
    """
    from remul_ff.errors import RemulError

    target = Path(path)
    if target.exists() and target.is_dir() != folder:
        what, expected = ("a folder", "a file") if target.is_dir() else ("a file", "a folder")
        raise RemulError(f"{option} {target} is {what}, but {expected} is needed; give another path.")
    parent = next((p for p in [target, *target.parents] if p.exists()), Path("."))
    if parent != target and not parent.is_dir():
        raise RemulError(f"{option} {target} cannot be created because {parent} is a file; give another path.")
    if not os.access(parent if parent != target else target, os.W_OK):
        raise RemulError(f"{option} {target} is not writable (no write permission on {parent}); give another path.")
