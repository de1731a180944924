"""Offline guards and the on-disk cache shared by the model loaders.

Nothing in ``tl_interp.models`` may reach the Hugging Face hub: ``hub_offline`` switches
``huggingface_hub`` into offline mode for the duration of a local load (the environment
variable alone is read once, at import time, so the module constant is patched too).
``cache_root`` and ``atomic_dir`` give the converted-checkpoint cache its location
(``$TL_INTERP_CACHE`` or ``~/.cache/tl_interp``) and its crash-safe writes: a cache entry is
built in a temporary sibling directory and renamed into place, so a reader never sees half
an entry.
"""

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["hub_offline", "cache_root", "atomic_dir", "CACHE_ENV_VAR"]

CACHE_ENV_VAR = "TL_INTERP_CACHE"


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Run the body with the Hugging Face hub in offline mode, then restore the old mode.

    Example:
        >>> with hub_offline():
        ...     import huggingface_hub.constants as c
        ...     c.is_offline_mode()
        True
    """
    import huggingface_hub.constants as hub_constants

    old_env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    old_const = hub_constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = old_const
        for key, value in old_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def cache_root() -> Path:
    """The directory holding converted checkpoints: ``$TL_INTERP_CACHE`` or ``~/.cache/tl_interp``.

    Example:
        >>> isinstance(cache_root(), Path)
        True
    """
    override = os.environ.get(CACHE_ENV_VAR)
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "tl_interp"


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
