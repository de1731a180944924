"""The receiver-input edit of path patching: one edge sender -> receiver, everything else frozen.

Path patching (Wang et al. 2022, "Interpretability in the Wild", appendix B; Goldowsky-Dill
et al. 2023) asks what a sender (a head, an MLP) does to the metric only through a receiver's
input (a head's query / key / value input, an MLP's input, the residual stream into the
unembedding). With every other component frozen at the base run, the receiver's input is the
base run's residual stream there plus the sender's change of output, ``delta = sender(source)
- sender(base)``; the receiver recomputes its own norm from that input and everything
downstream of it runs as usual. ``path_input`` is that edit: it *sets* the receiver's input to
``base + delta`` (rather than adding ``delta`` to whatever arrives), so a receiver later in the
stack than another receiver of the same study sees exactly its frozen-path input, as in the
paper's two-pass recipe.
"""

from jaxtyping import Float
from torch import Tensor

from tl_interp._checks import checked
from tl_interp._types import IndexSelection
from tl_interp.errors import ShapeError
from tl_interp.hooks._edit import check_finite, check_trailing, edit_intervention
from tl_interp.hooks._select import Selection, fit_to_activation
from tl_interp.intervention import Intervention

__all__ = ["path_input", "path_projection"]


@checked
def path_input(where: str, delta: Float[Tensor, "batch pos d_model"], *, base: Float[Tensor, "batch pos d_model"],
               heads: IndexSelection = None) -> Intervention:
    """Set a receiver's input to the base run's input plus a sender's direct contribution.

    Args:
        where: the receiver's input hook: ``blocks.L.hook_q_input`` / ``hook_k_input`` /
            ``hook_v_input`` (per head; TransformerLens's ``use_split_qkv_input``),
            ``blocks.L.hook_mlp_in`` (``use_hook_mlp_in``) or a residual-stream hook such as
            ``blocks.L.hook_resid_post`` (the input of the next block, or of the unembedding).
        delta: the senders' change of output, ``sender(source run) - sender(base run)``, summed
            over the senders that write before ``where``.
        base: the base run's residual stream at ``where`` (for head inputs: ``resid_pre``).
        heads: on a per-head input, which heads receive (default all).

    Returns:
        An Intervention writing ``base + delta`` into the selected entries.

    Example:
        >>> import torch
        >>> from transformer_lens import HookedTransformer, HookedTransformerConfig
        >>> cfg = HookedTransformerConfig(n_layers=2, d_model=8, n_heads=2, d_head=4, n_ctx=4, d_vocab=5,
        ...                               act_fn="relu", d_mlp=16, use_split_qkv_input=True)
        >>> model, tokens = HookedTransformer(cfg), torch.tensor([[1, 2, 3]])
        >>> _, cache = model.run_with_cache(tokens)
        >>> base = cache["blocks.1.hook_resid_pre"]
        >>> iv = path_input("blocks.1.hook_q_input", torch.zeros(1, 3, 8), base=base, heads=1)
        >>> print(iv)
        Intervention (1 hook):
          1. path input: base + sender delta (heads 1) at blocks.1.hook_q_input
        >>> torch.allclose(iv.run(model, tokens), model(tokens), atol=1e-6)  # a zero delta changes nothing
        True
    """
    if delta.shape != base.shape:
        raise ShapeError(f"path_input at {where}: delta has shape {tuple(delta.shape)} and base {tuple(base.shape)}; "
                         "both are the residual stream (batch, pos, d_model) of runs on the same inputs")
    check_finite(delta.detach(), "delta", f"path_input at {where}")
    total = base + delta  # once: the hook runs in every pass (and on the base run, to find what changes)

    def make_edit(name, info, context):
        check_trailing(context, info, tuple(base.shape[-1:]), "the residual stream")

        def edit(act: Tensor, axes: tuple[str, ...]) -> Tensor:
            value = total
            if act.ndim == value.ndim + 1:  # a per-head input: the same residual stream for every head
                value = value.unsqueeze(-2)
            fitted = fit_to_activation(value, act, axes, "the path input", context)
            if fitted.shape[0] != act.shape[0] or fitted.shape[1] != act.shape[1]:
                raise ShapeError(f"{context}: the path input has shape {tuple(value.shape)}, the activation "
                                 f"{tuple(act.shape)}; base and delta must come from runs on these inputs")
            return fitted.to(act.dtype)

        return edit

    return edit_intervention("path_input", "path input: base + sender delta", where,
                             Selection(heads=heads), make_edit)



@checked
def path_projection(where: str, delta: Float[Tensor, "batch pos d_model"], *, weight: Float[Tensor, "d_model d_head"],
                    head: int) -> Intervention:
    """Add one head's projection of a sender's (already normalised) change to its query, key or value.

    The frozen-norm linearisation of ``path_input`` that TransformerLens's direct path patching
    uses: the receiver's norm keeps the base run's scale, so its input change is linear in the
    sender's and lands on the head's ``q``/``k``/``v`` (before rotary) as ``delta @ weight``.

    Args:
        where: ``blocks.L.attn.hook_q`` / ``hook_k`` / ``hook_v``.
        delta: the sender's change through the receiver's norm at the base run's scale
            (``(d - mean d) * w / scale`` for LayerNorm, ``d * w / scale`` for RMSNorm).
        weight: the head's projection, ``W_Q[head]`` / ``W_K[head]`` / ``W_V[head]``.
        head: the receiving head.

    Example:
        >>> import torch
        >>> print(path_projection("blocks.1.attn.hook_q", torch.zeros(1, 3, 8), weight=torch.zeros(8, 4), head=0))
        Intervention (1 hook):
          1. path projection: + delta @ W (heads 0) at blocks.1.attn.hook_q
    """
    check_finite(delta.detach(), "delta", f"path_projection at {where}")

    def make_edit(name, info, context):
        check_trailing(context, info, tuple(weight.shape[-1:]), "the projection")

        def edit(act: Tensor, axes: tuple[str, ...]) -> Tensor:
            change = fit_to_activation((delta @ weight).unsqueeze(-2), act, axes, "the projected change", context)
            return act + change.to(act.dtype)

        return edit

    return edit_intervention("path_projection", "path projection: + delta @ W", where, Selection(heads=head), make_edit)
