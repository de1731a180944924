"""The Hugging Face hub's offline switch: nothing in ``tl_interp.models`` may reach the hub.

``huggingface_hub`` reads ``HF_HUB_OFFLINE`` once, at import time, into
``huggingface_hub.constants.HF_HUB_OFFLINE`` (what ``is_offline_mode()`` returns), so a local
load sets both the environment variables and that module constant, and restores them after.
"""

import contextlib
import os
from collections.abc import Iterator

from tl_interp.compat._guard import NO_FALLBACK, require

__all__ = ["hub_offline"]


def _check_offline_switch() -> str | None:
    import huggingface_hub.constants as hub_constants

    if not isinstance(getattr(hub_constants, "HF_HUB_OFFLINE", None), bool):
        return "huggingface_hub.constants.HF_HUB_OFFLINE is no longer a bool"
    if not callable(getattr(hub_constants, "is_offline_mode", None)):
        return "huggingface_hub.constants.is_offline_mode is gone"
    return None


NO_FALLBACK.update({"hub_offline": _check_offline_switch})


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Run the body with the Hugging Face hub in offline mode, then restore the old mode.

    Raises ``UnsupportedError`` (before the body runs) when the installed ``huggingface_hub``
    no longer has the switch, rather than loading with the hub reachable.

    Example:
        >>> with hub_offline():
        ...     import huggingface_hub.constants as c
        ...     c.is_offline_mode()
        True
    """
    require("hub_offline", "loading a model offline")
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
