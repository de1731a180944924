"""The model head: final norm, unembedding and logit soft cap, exactly as the end of
``HookedTransformer.forward`` computes them (the engine's one head, fast path ``"head"``).

TL's ``apply_softcap`` is a utility, not public API; ``Unembed.forward`` copies the transposed
``W_U`` on every call, so a caller that unembeds many times reuses one copy
(``reusing_unembed_weight``).
"""

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import torch
from torch import Tensor

from tl_interp.compat._guard import FAST_PATHS
from tl_interp.compat.hook_points import is_plain

__all__ = ["head", "head_columns", "unembed_weight_of", "reusing_unembed_weight", "head_is_plain"]


def _check_head() -> str | None:
    from transformer_lens.utilities import apply_softcap  # noqa: F401 - presence is the check

    return None


FAST_PATHS.update({"head": _check_head})


def _final_norm(model: Any, resid: Tensor) -> Tensor:
    x = resid.reshape(-1, 1, resid.shape[-1])
    return model.ln_final(x) if model.cfg.normalization_type is not None else x


def _soft_cap(model: Any, logits: Tensor, shape: torch.Size) -> Tensor:
    from transformer_lens.utilities import apply_softcap

    logits = apply_softcap(logits, model.cfg.output_logits_soft_cap)
    return logits.reshape(*shape[:-1], logits.shape[-1])


def head(model: Any, resid: Tensor, *, unembed_weight: Tensor | None = None) -> Tensor:
    """Final norm, unembedding and logit soft cap of residuals ``(..., d_model)``: exactly the
    end of ``HookedTransformer.forward``.

    ``unembed_weight`` is ``unembed_weight_of(model)`` computed once by a caller that unembeds
    many times: TL's ``Unembed.forward`` copies the transposed ``W_U`` into contiguous memory on
    every call (as Hugging Face's layout), which for a large vocabulary costs more than the
    product itself. With no hook on the unembedding (``head_is_plain``) the same
    ``F.linear(x, W_U.T.contiguous(), b_U)`` is computed on the copy.
    """
    x = _final_norm(model, resid)
    if unembed_weight is None:
        logits = model.unembed(x)
    else:
        logits = torch.nn.functional.linear(x, unembed_weight, model.unembed.b_U)
    return _soft_cap(model, logits, resid.shape)


def head_columns(model: Any, resid: Tensor, columns: Tensor) -> Tensor:
    """``head(model, resid)[..., columns]`` without computing the other logits: the final norm,
    the unembedding's ``columns`` and the soft cap (a tuned lens trains on a sampled vocabulary,
    whose full unembedding would cost 30x its forward on CPU)."""
    x = _final_norm(model, resid)
    logits = x @ model.unembed.W_U[:, columns] + model.unembed.b_U[columns]
    return _soft_cap(model, logits, resid.shape)


_REUSED: ContextVar[dict[tuple[int, int], Tensor] | None] = ContextVar("tl_interp_unembed_weights", default=None)


def unembed_weight_of(model: Any) -> Tensor:
    """The unembedding weight in the layout TL's ``Unembed.forward`` multiplies by (made once
    per ``reusing_unembed_weight`` block; keyed by the parameter's version, so an edited
    ``W_U`` is never served stale)."""
    w = model.unembed.W_U
    cache = _REUSED.get()
    key = (id(w), w._version)
    if cache is not None and key in cache:
        return cache[key]
    out = w.T.contiguous()
    if cache is not None:
        cache[key] = out
    return out


@contextlib.contextmanager
def reusing_unembed_weight() -> Iterator[None]:
    """Within the block, ``unembed_weight_of`` copies each model's ``W_U`` once (a study that
    runs several base runs -- steering's groups of prompts by length -- unembeds once each)."""
    token = _REUSED.set({})
    try:
        yield
    finally:
        _REUSED.reset(token)


def head_is_plain(model: Any) -> bool:
    """No hook attached to ``ln_final`` or ``unembed`` (a user's hook there must see the model's
    own head run on every position, so the engine's head may not replace it)."""
    parts = [getattr(model, "ln_final", None), getattr(model, "unembed", None)]
    return all(is_plain(p) for p in parts if p is not None)
