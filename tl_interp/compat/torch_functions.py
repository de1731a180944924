"""torch's own switches for a ``Tensor`` subclass that watches what a function does to it
(``engine/reads.py``'s ``Watched`` logits): running an operation as on a plain tensor inside
``__torch_function__``, and flattening an operation's arguments.

Both are the forms PyTorch's extension docs use (``torch._C.DisableTorchFunctionSubclass``,
``torch.utils._pytree``); they live under private names, so they are reached only here, behind
``usable()``. When they are not as expected, the one caller (the plain-metric probe) proves
nothing and the engine reads the full logits: exact, only slower.
"""

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["usable", "as_plain_tensors", "leaves"]


@contextlib.contextmanager
def as_plain_tensors() -> Iterator[None]:
    """Inside, an operation on a ``Tensor`` subclass runs as on a plain tensor (no dispatch back
    to the subclass's ``__torch_function__``)."""
    with torch._C.DisableTorchFunctionSubclass():
        yield


def leaves(tree: Any) -> list[Any]:
    """The leaves of nested tuples / lists / dicts (an operation's ``args`` and ``kwargs``)."""
    from torch.utils._pytree import tree_flatten

    return tree_flatten(tree)[0]


@functools.cache
def usable() -> bool:
    """Both switches behave as ``engine/reads.py`` needs (checked by running them once).

    Example:
        >>> usable()
        True
    """
    class Seen(torch.Tensor):
        calls = 0

        @classmethod
        def __torch_function__(cls, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
            cls.calls += 1
            with as_plain_tensors():
                return func(*args, **(kwargs or {}))

    try:
        x = torch.ones(2).as_subclass(Seen)
        out = x + 1
        found = leaves(((x, [1, {"k": x}]), {"a": 2}))
    except (AttributeError, ImportError, TypeError):
        return False
    return Seen.calls >= 1 and type(out) is torch.Tensor and len(found) == 4 and found[0] is x and found[2] is x
