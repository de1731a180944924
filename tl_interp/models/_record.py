"""Models remember how they were loaded, so another process can load the same one.

``ti.distributed`` re-loads a model on each Ray worker by the name and keywords it was loaded
with (``model.tl_interp_load_name`` / ``model.tl_interp_load_kwargs``) instead of shipping its
weights, then checks the replica weight for weight against the original.
"""

import functools
import os
from collections.abc import Callable
from typing import Any

__all__ = ["recorded"]


def recorded(load: Callable[..., Any]) -> Callable[..., Any]:
    """``load``, recording its name and keywords on the model it returns.

    Example:
        >>> from torch import nn
        >>> make = recorded(lambda name, **kw: nn.Linear(2, 2))
        >>> make("tiny", bias=False).tl_interp_load_name
        'tiny'
    """

    @functools.wraps(load)
    def _load(name_or_path: Any, **kwargs: Any) -> Any:
        model = load(name_or_path, **kwargs)
        try:
            model.tl_interp_load_name = os.fspath(name_or_path)
            model.tl_interp_load_kwargs = dict(kwargs)
        except (AttributeError, TypeError):  # a model that takes no attributes is shipped instead
            pass
        return model

    return _load
