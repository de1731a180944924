"""A TransformerLens HookPoint's hook list: adding one hook and removing exactly that one.

``HookPoint.add_hook`` returns nothing; the handle it makes (a ``LensHandle`` whose ``.hook``
is torch's ``RemovableHandle``) is appended to ``point.fwd_hooks``. ``HookPoint.remove_hooks``
removes every hook of a direction, including hooks the user attached, so ``Intervention.applied``
finds its own handle in the list and removes only it. ``is_plain`` reads torch's own hook
dictionaries (``_forward_hooks``) to tell that nothing is attached to a module at all.
"""

from typing import Any

from tl_interp._types import HookFn
from tl_interp.compat._guard import NO_FALLBACK, require

__all__ = ["add_forward_hook", "remove_forward_hook", "attached_hooks", "is_plain", "blocks_are_plain"]


def _check_hook_list() -> str | None:
    import torch
    from transformer_lens.hook_points import HookPoint

    point = HookPoint()
    point.add_hook(lambda act, hook: act + 1, dir="fwd")
    if len(getattr(point, "fwd_hooks", ())) != 1 or not hasattr(point.fwd_hooks[0].hook, "remove"):
        return "HookPoint.add_hook no longer appends a handle with .hook.remove() to fwd_hooks"
    handle = point.fwd_hooks[0]
    handle.hook.remove()
    point.fwd_hooks = []
    if not torch.equal(point(torch.zeros(1)), torch.zeros(1)):
        return "removing a HookPoint handle's .hook no longer detaches the hook"
    return None


NO_FALLBACK.update({"hook_points": _check_hook_list})


def add_forward_hook(point: Any, fn: HookFn) -> Any:
    """Add ``fn`` as a forward hook of ``point``; returns its handle (for ``remove_forward_hook``).

    Example:
        >>> import torch
        >>> from transformer_lens.hook_points import HookPoint
        >>> point = HookPoint()
        >>> handle = add_forward_hook(point, lambda act, hook: act * 2)
        >>> point(torch.ones(1)).item()
        2.0
        >>> remove_forward_hook(point, handle)
        >>> point(torch.ones(1)).item(), attached_hooks(point)
        (1.0, 0)
    """
    require("hook_points", "attaching a hook")
    before = list(point.fwd_hooks)
    point.add_hook(fn, dir="fwd")
    return next(h for h in point.fwd_hooks if not any(h is b for b in before))


def remove_forward_hook(point: Any, handle: Any) -> None:
    """Remove exactly the hook ``handle`` (from ``add_forward_hook``); others stay attached."""
    handle.hook.remove()
    point.fwd_hooks = [h for h in point.fwd_hooks if h is not handle]


def attached_hooks(point: Any) -> int:
    """How many forward and backward hooks are attached to ``point``."""
    return len(getattr(point, "fwd_hooks", None) or ()) + len(getattr(point, "bwd_hooks", None) or ())


def is_plain(module: Any) -> bool:
    """No forward hook on ``module`` or inside it, and every hook point still a plain ``HookPoint``
    (not replaced, e.g. by an SAE spliced in).

    Example:
        >>> from transformer_lens.hook_points import HookPoint
        >>> point = HookPoint()
        >>> before = is_plain(point)
        >>> handle = add_forward_hook(point, lambda act, hook: act)
        >>> before, is_plain(point)
        (True, False)
    """
    from transformer_lens.hook_points import HookPoint

    for name, m in module.named_modules():
        if m._forward_hooks or m._forward_pre_hooks:
            return False
        if name.rsplit(".", 1)[-1].startswith("hook_") and type(m) is not HookPoint:
            return False  # a hook point replaced (e.g. by an SAE spliced in)
    return True


def blocks_are_plain(model: Any, first: int) -> bool:
    """No hook attached in blocks ``first..`` (positions are sliced there on the prefix paths)."""
    return all(is_plain(block) for block in model.blocks[first:])
