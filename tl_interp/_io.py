"""Crash-safe writes shared by every module that saves files (results, reports, the zoo,
the checkpoint cache): content is written to a temporary sibling and renamed into place, so a
reader (or an interrupted run) never sees half a file or half a directory.
"""

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_file", "atomic_dir"]


@contextlib.contextmanager
def atomic_file(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path that replaces ``final`` only if the body succeeds.

    The file gets ordinary permissions (``0666 & ~umask``), not mkstemp's private 0600.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "out.txt"
        >>> with atomic_file(target) as tmp:
        ...     _ = tmp.write_text("done")
        >>> target.read_text()
        'done'
    """
    target = Path(final)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``final`` only if the body succeeds.

    If another process published ``final`` first, the temporary copy is discarded and the
    existing entry is kept (entries under one key are interchangeable).

    Args:
        final: Where the finished directory should appear.

    Returns:
        A context manager yielding the temporary directory to fill.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "entry"
        >>> with atomic_dir(target) as tmp:
        ...     _ = (tmp / "x.txt").write_text("done")
        >>> (target / "x.txt").read_text()
        'done'
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp makes it private; a published entry is an ordinary dir
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
