"""TransformerLens's norms as one fused kernel, for code that normalises many rows outside a
forward pass (circuits' faithfulness rows recompute a head's input norm per circuit).

TL's ``LayerNorm`` / ``LayerNormPre`` / ``RMSNorm`` / ``RMSNormPre`` compute, in six or seven
elementwise passes with two hook points, exactly what ``torch.nn.functional.layer_norm`` /
``rms_norm`` compute in one (the same formula; float rounding aside). ``fused_norm`` returns
that kernel for a norm of one of those classes (exact class, float32/float64, no hook attached
to it), and the module itself for anything else.
"""

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from tl_interp.compat.hook_points import is_plain

__all__ = ["fused_norm"]


def fused_norm(norm: Any) -> Callable[[Tensor], Tensor]:
    """``norm`` (a TL norm module) as one kernel over the last axis, or ``norm`` itself.

    Example:
        >>> import torch
        >>> from transformer_lens import HookedTransformer, HookedTransformerConfig
        >>> cfg = HookedTransformerConfig(n_layers=1, d_model=8, n_heads=2, d_head=4, n_ctx=4, d_vocab=5, act_fn="relu")
        >>> ln = HookedTransformer(cfg).blocks[0].ln1
        >>> x = torch.randn(3, 8)
        >>> torch.allclose(fused_norm(ln)(x), ln(x), atol=1e-6), fused_norm(ln) is ln
        (True, False)
    """
    from transformer_lens.components import LayerNorm, LayerNormPre, RMSNorm, RMSNormPre

    cfg = getattr(norm, "cfg", None)
    kind = type(norm)
    if (kind not in (LayerNorm, LayerNormPre, RMSNorm, RMSNormPre) or cfg is None
            or cfg.dtype not in (torch.float32, torch.float64) or not is_plain(norm)):
        return norm
    eps = float(norm.eps)
    if kind is LayerNorm:
        return lambda x: torch.nn.functional.layer_norm(x, x.shape[-1:], norm.w, norm.b, eps)
    if kind is LayerNormPre:
        return lambda x: torch.nn.functional.layer_norm(x, x.shape[-1:], None, None, eps)
    if kind is RMSNorm:
        return lambda x: torch.nn.functional.rms_norm(x, x.shape[-1:], norm.w, eps)
    return lambda x: torch.nn.functional.rms_norm(x, x.shape[-1:], None, eps)
