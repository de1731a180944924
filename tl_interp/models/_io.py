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
from collections.abc import Iterator
from pathlib import Path

__all__ = ["hub_offline", "cache_root", "atomic_dir", "CACHE_ENV_VAR"]

from tl_interp._io import atomic_dir  # noqa: E402 - re-exported for the loaders

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


