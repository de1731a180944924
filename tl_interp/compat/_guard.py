"""The check of the internals that have no exact fallback: each module of ``compat`` registers
a behavioural check per feature here, and its accessors ``require`` the feature before use."""

import functools
from collections.abc import Callable

from tl_interp.errors import UnsupportedError

__all__ = ["NO_FALLBACK", "reason", "require"]

NO_FALLBACK: dict[str, Callable[[], str | None]] = {}  # feature -> check (None when as expected)


@functools.cache
def reason(feature: str) -> str | None:
    """Why the internal behind ``feature`` is not as expected, or None."""
    try:
        return NO_FALLBACK[feature]()
    except (ImportError, AttributeError, TypeError, ValueError) as err:
        return f"{feature}: {type(err).__name__}: {err}"


def require(feature: str, what: str) -> None:
    """Raise ``UnsupportedError`` when an internal with no exact fallback is not as expected.

    Example:
        >>> require("hook_points", "Intervention.applied")
    """
    why = reason(feature)
    if why is not None:
        raise UnsupportedError(f"{what}: the installed libraries changed an internal tl_interp relies on ({why}); "
                               "install the versions in constraints.txt")
