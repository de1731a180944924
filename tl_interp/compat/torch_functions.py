"""torch's own switches for a ``Tensor`` subclass that watches what a function does to it
(``engine/reads.py``'s ``Watched`` logits): running an operation as on a plain tensor inside
``__torch_function__``, and flattening an operation's arguments.

Both are the forms PyTorch's extension docs use (``torch._C.DisableTorchFunctionSubclass``,
``torch.utils._pytree``); they live under private names, so they are reached only here, behind
``usable()``. When they are not as expected, the one caller (the plain-metric probe) proves
nothing and the engine reads the full logits: exact, only slower. ``storage_uses`` (how many
tensors share one storage) and ``writes`` (a tensor's version counter) let the engine reuse one
buffer of hidden logits across calls only while no call has kept a view of it or written into
it (``counts_usable``); without them every call gets fresh logits.
"""

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["usable", "as_plain_tensors", "leaves", "storage_uses", "writes", "counts_usable"]


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


def writes(tensor: torch.Tensor) -> int:
    """``tensor``'s version counter: it moves with every in-place write through it or a view of it.

    Example:
        >>> x = torch.zeros(3)
        >>> before = writes(x)
        >>> x[1:].add_(1)[0].item(), writes(x) > before
        (1.0, True)
    """
    return int(tensor._version)


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


@functools.cache
def counts_usable() -> bool:
    """``storage_uses`` and ``writes`` see a view being made and dropped, and a write through
    a view (checked by running them once); else nothing may reuse a buffer a call has seen.

    Example:
        >>> counts_usable()
        True
    """
    try:
        with torch.inference_mode(False):  # normal tensors: inference ones have no version counter
            base = torch.zeros(4)
            alone = storage_uses(base)
            view = base[1:]
            shared = storage_uses(base)
            del view
            before = writes(base)
            base[1:].as_strided((1,), (1,), 0).fill_(1.0)
            return shared == alone + 1 and storage_uses(base) == alone and writes(base) > before
    except (AttributeError, TypeError, RuntimeError):
        return False
