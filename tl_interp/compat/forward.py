"""Wrapping one model instance's ``forward`` and ``generate`` (the run context, ``_context.py``).

``torch.nn.Module.__call__`` looks ``forward`` up on the instance, so a function stored in the
instance's ``__dict__`` shadows the class's method for every call of that model (and of no other
model); ``HookedTransformer.generate`` (TL 4: ``TransformerBridge.generate``) runs each step through
``self.forward`` (``self(...)``), so its steps pass the wrapper too. Restoring deletes the instance attribute (or puts back one the user had set).
"""

import inspect
from collections.abc import Callable
from typing import Any

from tl_interp.compat._guard import NO_FALLBACK, require

__all__ = ["installed_forward", "install", "uninstall"]


def _check_instance_forward() -> str | None:
    import torch

    from tl_interp.compat.tl import bridge_class, hooked_transformer_class

    module = torch.nn.Identity()
    module.forward = lambda x: x + 1  # type: ignore[method-assign]
    if not torch.equal(module(torch.zeros(1)), torch.ones(1)):
        return "torch.nn.Module.__call__ no longer calls an instance's own forward"
    hooked = hooked_transformer_class()
    if hooked is not None:
        if "self.forward(" not in inspect.getsource(hooked.generate):
            return "HookedTransformer.generate no longer runs its steps through self.forward"
        return None
    return _bridge_generate_reason(bridge_class())


def _bridge_generate_reason(bridge_cls: Any) -> str | None:
    """TransformerLens 4: run a 1-layer native Bridge's ``generate`` for two tokens with an instance
    ``forward`` that counts its calls; each step must go through it."""
    import torch
    from transformer_lens.config import TransformerBridgeConfig

    cfg = TransformerBridgeConfig.from_dict(dict(n_layers=1, d_model=8, n_heads=2, d_head=4, d_vocab=5, n_ctx=8,
                                                 attn_only=True, act_fn="relu", normalization_type=None, seed=0))
    bridge = bridge_cls.boot_native(cfg)
    bridge.enable_compatibility_mode(disable_warnings=True, no_processing=True)
    calls = []
    own = type(bridge).forward

    def _counting_forward(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return own(bridge, *args, **kwargs)

    bridge.forward = _counting_forward
    bridge.generate(torch.zeros(1, 2, dtype=torch.long), max_new_tokens=2, do_sample=False, stop_at_eos=False,
                    verbose=False)
    if len(calls) < 2:
        return f"TransformerBridge.generate ran {len(calls)} of its 2 steps through the instance's forward"
    return None


NO_FALLBACK.update({"forward_wrap": _check_instance_forward})


def installed_forward(model: Any) -> Any:
    """The ``forward`` stored on the instance itself (a wrapper, or the user's own), or None."""
    return model.__dict__.get("forward")


def install(model: Any, forward: Callable[..., Any], generate: Callable[..., Any] | None) -> dict[str, Any]:
    """Make ``forward`` (and ``generate``, when given) this instance's own; returns what
    ``uninstall`` restores (the instance's previous attributes, None where it had none)."""
    require("forward_wrap", "describing the model's forward calls")
    previous = {attr: model.__dict__.get(attr) for attr in ("forward", "generate")}
    model.forward = forward
    if generate is None:
        previous.pop("generate")
    else:
        model.generate = generate
    return previous


def uninstall(model: Any, previous: dict[str, Any]) -> None:
    """Put back the instance attributes ``install`` replaced (the class's methods show again)."""
    for attr, value in previous.items():
        if value is None:
            model.__dict__.pop(attr, None)
        else:
            setattr(model, attr, value)
