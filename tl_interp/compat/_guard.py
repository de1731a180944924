"""The guard of every outside internal: ``usable`` for the engine's fast paths, ``require`` for
the internals with no exact fallback.

Each topic module of ``compat`` registers its checks here, by feature name: a fast path's check
in ``FAST_PATHS`` (``usable``: the installed TransformerLens must be in ``TESTED_RANGE`` and the
internal as expected, else the engine runs the exact full forward pass and warns once), an
internal with no exact fallback in ``NO_FALLBACK`` (``require``: checked by behaviour alone,
each check running the internal on a tiny object; when it fails, ``UnsupportedError``).
"""

import functools
import importlib.metadata
import warnings
from collections.abc import Callable

from tl_interp.errors import FastPathWarning, UnsupportedError

__all__ = ["TESTED_RANGE", "FAST_PATHS", "NO_FALLBACK", "tl_version", "version_reason", "reason", "usable",
           "require"]

TESTED_RANGE = ((3, 9), (4, 0))  # [3.9, 4.0): the versions the compatibility tests ran on
FAST_PATHS: dict[str, Callable[[], str | None]] = {}  # feature -> check of a fast path's internal
NO_FALLBACK: dict[str, Callable[[], str | None]] = {}  # feature -> check (None when as expected)


def tl_version() -> str:
    """The installed transformer-lens version string."""
    try:
        return importlib.metadata.version("transformer-lens")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - TL is a dependency
        return "0"


def version_reason(version: str) -> str | None:
    """Why the fast paths are off for transformer-lens ``version`` (outside ``TESTED_RANGE``), or None.

    Example:
        >>> version_reason("3.9.1") is None, "outside the range" in version_reason("4.0.0")
        (True, True)
    """
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    low, high = TESTED_RANGE
    if len(parts) < 2 or not low <= parts < high:
        return (f"transformer-lens {version} is outside the range tl_interp's fast paths are tested on "
                f"(>={low[0]}.{low[1]},<{high[0]}.{high[1]})")
    return None


@functools.cache
def reason(feature: str) -> str | None:
    """Why the internal behind ``feature`` is not as expected, or None."""
    if feature not in NO_FALLBACK:  # a fast path: only on the tested TransformerLens releases
        version = version_reason(tl_version())
        if version:
            return version
    try:
        return (NO_FALLBACK.get(feature) or FAST_PATHS[feature])()
    except (ImportError, AttributeError, TypeError, ValueError) as err:
        return f"{feature}: {type(err).__name__}: {err}"


@functools.cache
def _warn_once(feature: str, why: str) -> None:
    warnings.warn(f"tl_interp fast path '{feature}' is off ({why}); the exact full forward pass runs "
                  "instead (slower, same results)", FastPathWarning, stacklevel=3)


def usable(feature: str) -> bool:
    """Whether a TL internal the engine uses is present and as expected (warns once if not).

    Example:
        >>> from tl_interp.compat import has_hooked_transformer
        >>> usable("kv_cache") == has_hooked_transformer()  # a HookedTransformer internal: none on TL 4
        True
    """
    why = reason(feature)
    if why is not None:
        _warn_once(feature, why)
    return why is None


def require(feature: str, what: str) -> None:
    """Raise ``UnsupportedError`` when an internal with no exact fallback is not as expected.

    Example:
        >>> require("hook_points", "Intervention.applied")
    """
    why = reason(feature)
    if why is not None:
        raise UnsupportedError(f"{what}: the installed libraries changed an internal tl_interp relies on ({why}); "
                               "install the versions in constraints.txt")
