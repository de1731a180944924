"""torch's own switches for a ``Tensor`` subclass that watches what a function does to it
(``engine/reads.py``'s ``Watched`` logits): running an operation as on a plain tensor inside
``__torch_function__``, and flattening an operation's arguments.

Both are the forms PyTorch's extension docs use (``torch._C.DisableTorchFunctionSubclass``,
``torch.utils._pytree``); they live under private names, so they are reached only here, behind
``usable()``. When they are not as expected, the one caller (the plain-metric probe) proves
nothing and the engine reads the full logits: exact, only slower. ``storage_uses`` (how many
tensors share one storage) lets the engine reuse one buffer of hidden logits across calls only
while no call has kept a view of it; without it every call gets fresh logits.
"""

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["usable", "as_plain_tensors", "leaves", "storage_uses"]


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


def storage_uses(tensor: torch.Tensor) -> int:
    """How many references hold ``tensor``'s storage (every tensor viewing it counts one).

    Example:
        >>> x = torch.zeros(3)
        >>> before = storage_uses(x)
        >>> view = x[1:]
        >>> storage_uses(x) - before
        1
    """
    return int(torch._C._storage_Use_Count(tensor.untyped_storage()._cdata))


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
        base = torch.zeros(4)
        alone = storage_uses(base)
        view = base[1:]
        shared = storage_uses(base)
        del view
        counted = shared == alone + 1 and storage_uses(base) == alone
    except (AttributeError, ImportError, TypeError, RuntimeError):
        return False
    return counted and Seen.calls >= 1 and type(out) is torch.Tensor and len(found) == 4 and found[0] is x and found[2] is x
