"""Weights stored the way TransformerLens's forward multiplies by them, for the length of a study.

On every call TL re-lays out the weight matrices of a block before multiplying: ``GatedMLP``
computes ``F.linear(x, W.T.contiguous())`` for ``W_gate`` / ``W_in`` / ``W_out`` and ``Unembed``
for ``W_U`` (to match Hugging Face's ``nn.Linear`` layout), and attention rearranges ``W_Q`` / ``W_K`` / ``W_V``
(``head d_model d_head -> (head d_head) d_model``) and ``W_O`` (``-> d_model (head d_head)``,
then ``.contiguous()``). Each is a transposing copy of the whole matrix per block per forward call; a study
running hundreds of stacked passes over SmolLM2 copies ~12 MB per block per pass, and its
49,152 x 576 unembedding (113 MB, ~0.3 s on one CPU core) per full forward.

``forward_layout(model)`` gives each such parameter, inside the block, *the same values* stored
in the transposed order, so TL's transform is a view of a matrix that is already contiguous:
``.T.contiguous()`` and the rearrange return it without copying, and ``F.linear`` receives
bit-for-bit the operand it received before (same values, same contiguous layout). Only the
modules whose forward reads these parameters through exactly those transforms are touched
(``reason`` per module; a behavioural check, ``check``, runs TL's own modules both ways and
requires bit-identical outputs). The original storage is put back on every exit path.

While the block runs, ``param.stride()`` differs from the usual; any other reader of these
parameters (a user hook reading ``W_in``, another thread) sees the same values.
"""

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from tl_interp.compat._guard import FAST_PATHS

__all__ = ["forward_layout", "relaid", "check"]

_PROBE_ON_META = 2 ** 16  # values of a weight above which a meta probe (~15 us) is cheaper than copying it


def _transposed(w: Tensor) -> Tensor:
    """``w`` (2-d) with the same values, stored so ``w.T`` is contiguous."""
    return w.T.contiguous().T


def _heads_in(w: Tensor) -> Tensor:
    """``w`` (head, d_model, d_head), stored so ``(head d_head) d_model`` is a contiguous view."""
    h, m, d = w.shape
    return w.permute(0, 2, 1).contiguous().reshape(h, d, m).permute(0, 2, 1)


def _copied_by_tl(w: Tensor) -> bool:
    """Whether TL's ``head d_model d_head -> (head d_head) d_model`` rearrange of ``w`` gives a
    contiguous matrix (a copy). With one head it is a strided view instead, which ``F.linear``
    multiplies in another order: storing it transposed would change the bits, so it is left. A large ``w``
    is probed on the meta device (the same strides, no data: the rearrange's copy is not made)."""
    probe = w if w.numel() <= _PROBE_ON_META else torch.empty_strided(w.shape, w.stride(), dtype=w.dtype, device="meta")
    return probe.permute(0, 2, 1).reshape(-1, w.shape[1]).is_contiguous()


def _heads_out(w: Tensor) -> Tensor:
    """``w`` (head, d_head, d_model), stored so ``d_model (head d_head)`` is a contiguous view."""
    h, d, m = w.shape
    return w.permute(2, 0, 1).contiguous().reshape(m, h, d).permute(1, 2, 0)


def relaid(model: Any, *, unembed: bool = True) -> list[tuple[Any, str, Any]]:
    """``(module, parameter name, relayout)`` for every parameter ``forward_layout`` stores
    transposed (an empty list when nothing applies: a model other than TL's HookedTransformer,
    or attention in a mode that reads its weights otherwise); ``unembed=False`` leaves ``W_U``."""
    from transformer_lens.components import Attention, GroupedQueryAttention, Unembed
    from transformer_lens.components.mlps.gated_mlp import GatedMLP

    cfg = model.cfg
    attention_plain = not any(getattr(cfg, flag, False) for flag in
                              ("use_attn_result", "use_split_qkv_input", "use_attn_in", "load_in_4bit"))
    out: list[tuple[Any, str, Any]] = []
    for module in model.modules():
        if type(module) is Unembed:
            out += [(module, "W_U", _transposed)] if unembed else []
        elif type(module) is GatedMLP:
            out += [(module, name, _transposed) for name in ("W_gate", "W_in", "W_out")]
        elif type(module) in (Attention, GroupedQueryAttention) and attention_plain:
            grouped = type(module) is GroupedQueryAttention and not getattr(cfg, "ungroup_grouped_query_attention", False)
            kv = ("_W_K", "_W_V") if grouped else (("W_K", "W_V") if type(module) is Attention else ())
            out += [(module, name, _heads_in) for name in ("W_Q", *kv)]
            out.append((module, "W_O", _heads_out))
    return [(m, n, f) for m, n, f in out if isinstance(getattr(m, n, None), torch.nn.Parameter)
            and (f is not _heads_in or _copied_by_tl(getattr(m, n).data))]


_HELD: set[int] = set()  # the models (by id) an active forward_layout holds re-laid: nested blocks do nothing


@contextlib.contextmanager
def forward_layout(model: Any, enabled: bool = True, *, unembed: bool = True) -> Iterator[None]:
    """Within the block, TL's per-call weight re-layouts are views (module docstring); the
    parameters' own storage is restored after, on every exit path. Inside an enabled block a
    nested one does nothing: the outermost decides what is re-laid. ``unembed=False`` leaves
    ``W_U`` as it is: a study that never runs TL's own unembedding (the engine's read-only
    head) need not copy it (113 MB on SmolLM2).

    Example:
        >>> import torch
        >>> from transformer_lens import HookedTransformer, HookedTransformerConfig
        >>> cfg = HookedTransformerConfig(n_layers=1, d_model=8, n_heads=2, d_head=4, n_ctx=4, d_vocab=5,
        ...                               act_fn="silu", d_mlp=16, gated_mlp=True, seed=0)
        >>> model, tokens = HookedTransformer(cfg), torch.tensor([[1, 2, 3]])
        >>> before = model(tokens)
        >>> with forward_layout(model):
        ...     inside = model(tokens)
        >>> torch.equal(inside, before), model.blocks[0].mlp.W_in.is_contiguous()
        (True, True)
        >>> with forward_layout(model, unembed=False):
        ...     with forward_layout(model):  # nested: nothing more is re-laid
        ...         torch.equal(model(tokens), before), model.unembed.W_U.is_contiguous()
        (True, True)
    """
    touched: list[tuple[Any, Tensor]] = []
    outermost = enabled and id(model) not in _HELD
    try:
        if outermost:
            _HELD.add(id(model))
            with torch.no_grad(), torch.inference_mode(False):
                for module, name, relayout in relaid(model, unembed=unembed):
                    param = getattr(module, name)
                    touched.append((param, param.data))
                    param.data = relayout(param.data)
        yield
    finally:
        for param, data in reversed(touched):
            param.data = data
        if outermost:
            _HELD.discard(id(model))


def check() -> str | None:
    """Why ``forward_layout`` is not exact on the installed TransformerLens, or None: TL's own
    attention (grouped and not) and gated MLP, run with and without it, must agree bit for bit
    and be restored after."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    for kv_heads, expected in ((None, 8), (2, 8), (1, 6)):  # one key-value head: its K, V are left alone
        cfg = HookedTransformerConfig(n_layers=1, d_model=8, n_heads=4, d_head=2, n_ctx=6, d_vocab=7,
                                      act_fn="silu", d_mlp=12, gated_mlp=True, seed=0, n_key_value_heads=kv_heads,
                                      positional_embedding_type="rotary", normalization_type="RMS")
        model = HookedTransformer(cfg)
        tokens = torch.tensor([[1, 2, 3, 4, 5]])
        strides = [(n, p.stride()) for n, p in model.named_parameters()]
        with torch.no_grad():
            before = model(tokens)
            with forward_layout(model):
                if len(relaid(model)) != expected:
                    return "the gated MLP, attention or unembedding is not the TL class forward_layout expects"
                inside = model(tokens)
        if not torch.equal(before, inside):
            return "TL's forward gives different bits with its weights stored transposed"
        if [(n, p.stride()) for n, p in model.named_parameters()] != strides:
            return "the parameters were not restored"
    return None


FAST_PATHS.update({"layout": check})
