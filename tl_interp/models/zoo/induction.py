"""``induction-2l``: a two-layer attention-only transformer with a known induction circuit.

Trained on ``BOS + r + r`` (a random token sequence repeated once), it forms
previous-token heads in layer 0 and an induction head in layer 1 that K-composes with them
(Elhage et al. 2021, "A Mathematical Framework for Transformer Circuits"; Olsson et al.
2022, "In-context Learning and Induction Heads").

The mechanism of the packaged weights (measured in ``cards/induction-2l.json``, re-checked
by ``tests/test_zoo_models.py``): all three layer-0 heads (L0 H0-H2) are previous-token
heads (scores 0.47-0.50) that back each other up, and layer 1 has exactly one induction
head, L1 H2 (score 0.88); the sparsity penalty silenced the other two layer-1 heads (output
norm ~1e-5). The induction head finds the previous token in its keys (K-composition, score
0.21 with each layer-0 head against ~0.05 for Q and ~0.03 for V): removing layer 0's output
from layer 1's key input alone takes the repeated-half loss to 3.57 nats, from its query
input to 0.55, from its value input nowhere (0.33). So the single point of failure is the
induction head: zero-ablating it takes the repeated-half loss from 0.32 nats to 4.17 (no
better than guessing), zero-ablating any one previous-token head adds less than 0.02 nats,
and only cutting all three breaks induction (3.42 nats: L1 H2 then spreads its attention
over the context and copies an arbitrary earlier token). Copying is weakest at the
shortest trained length (repeated-half loss ~1.1 at ``L = 8``, at most 0.35 for
``L = 10..31``).

Why the model is built and trained as it is: ``tl_interp.training.induction``.

Scores, as in TransformerLens's induction demo, computed from ``blocks.{l}.attn.hook_pattern``
on held-out ``BOS + r + r`` sequences of half length ``L``:

- previous-token score: mean attention from position ``i`` to ``i - 1`` over ``i >= 1``;
- induction score: mean attention from each position ``i`` of the second copy
  (``L + 1 <= i <= 2L``) to ``i - L + 1``, the token after its earlier occurrence.
"""

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from tl_interp import compat
from tl_interp._checks import checked
from tl_interp.errors import SelectionError

__all__ = [
    "BOS_TOKEN",
    "N_RANDOM_TOKENS",
    "MIN_HALF_LEN",
    "MAX_HALF_LEN",
    "EVAL_HALF_LEN",
    "EVAL_SEED",
    "N_HEADS",
    "D_HEAD",
    "QUALITY_THRESHOLDS",
    "induction_config",
    "induction_fields",
    "repeated_tokens",
    "head_scores",
    "half_losses",
]

BOS_TOKEN = 0
N_RANDOM_TOKENS = 64  # random tokens are ids 1..64; d_vocab = 65
MIN_HALF_LEN = 8
MAX_HALF_LEN = 31  # 1 + 2 * 31 = 63 <= n_ctx = 64
EVAL_HALF_LEN = 31
EVAL_SEED = 1_000_003  # held-out sequences come from this seed, never a training seed
N_HEADS = 3  # per layer
D_HEAD = 32

# What the packaged model must measure on held-out BOS + r + r (tests check these; the card
# records them). Why these numbers: a model without in-context copying cannot beat ln 64 =
# 4.16 nats on either half, so first/repeated > 5 means most repeated tokens are copied
# (loss < 0.83 nats, i.e. p(correct) > 0.43 on average); uniform attention over the ~32 keys
# a query sees scores ~0.03, so 0.3 / 0.5 are an order of magnitude above chance.
# The two ablation thresholds state the mechanism (one induction head, redundant
# previous-token heads): zero-ablating the top induction head must cost at least 2 nats of
# repeated-half loss (half the way to guessing), zero-ablating any other single head at most
# 0.25 nats, so an ablation scan of heads ranks the induction head first by a wide margin.
QUALITY_THRESHOLDS: dict[str, float] = {
    "min_first_half_loss": 3.5,
    "max_repeated_half_loss": 0.5,
    "min_first_over_repeated_loss_ratio": 5.0,
    "min_previous_token_score": 0.3,
    "min_induction_score": 0.5,
    "min_induction_head_ablation_effect": 2.0,
    "max_other_head_ablation_effect": 0.25,
}


def induction_config(*, init_weights: bool = False) -> Any:
    """The architecture of ``induction-2l`` as a ``HookedTransformerConfig`` (TransformerLens 3.x;
    TransformerLens 4 has none: ``UnsupportedError``; the fields are ``induction_fields``).

    Args:
        init_weights: initialise the weights (training) or leave them for a load (loading).

    Returns:
        A config for a 2-layer, 3-head (``d_head`` 32), d_model 64, attention-only,
        LayerNorm-free model.
    """
    return compat.tl.hooked_config_class()(**induction_fields(init_weights=init_weights))


def induction_fields(*, init_weights: bool = False) -> dict[str, Any]:
    """The config fields of ``induction-2l`` (HookedTransformerConfig's names).

    Example:
        >>> induction_fields()["n_layers"], induction_fields()["n_heads"]
        (2, 3)
    """
    return dict(
        n_layers=2,
        d_model=64,
        n_heads=N_HEADS,
        d_head=D_HEAD,
        d_vocab=N_RANDOM_TOKENS + 1,
        n_ctx=64,
        attn_only=True,
        normalization_type=None,
        positional_embedding_type="standard",
        act_fn="relu",  # unused (no MLPs) but required by the config
        init_weights=init_weights,
        model_name="induction-2l",
        default_prepend_bos=False,
    )


@checked
def repeated_tokens(
    n_seqs: int, half_len: int, *, generator: torch.Generator
) -> Int[Tensor, "batch pos"]:
    """Random sequences repeated twice after a BOS: ``BOS + r + r``.

    Args:
        n_seqs: number of sequences.
        half_len: length ``L`` of ``r``; sequences have ``1 + 2L`` tokens.
        generator: the source of randomness (seed it for reproducible data).

    Returns:
        An int64 tensor ``(n_seqs, 1 + 2 * half_len)``; tokens of ``r`` are uniform on
        ``1..N_RANDOM_TOKENS`` (with replacement).

    Example:
        >>> repeated_tokens(2, 3, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([2, 7])
    """
    if not 1 <= half_len <= MAX_HALF_LEN:
        raise SelectionError(
            f"half_len={half_len} does not fit induction-2l's context of 64 tokens; "
            f"use 1 <= half_len <= {MAX_HALF_LEN}"
        )
    r = torch.randint(1, N_RANDOM_TOKENS + 1, (n_seqs, half_len), generator=generator)
    bos = torch.full((n_seqs, 1), BOS_TOKEN, dtype=torch.long)
    return torch.cat([bos, r, r], dim=1)


@checked
def head_scores(
    model: nn.Module, tokens: Int[Tensor, "batch pos"]
) -> tuple[Float[Tensor, "n_layers n_heads"], Float[Tensor, "n_layers n_heads"]]:
    """Previous-token and induction scores of every head on ``BOS + r + r`` sequences.

    Args:
        model: the model (any HookedTransformer whose vocabulary fits the tokens).
        tokens: sequences made by ``repeated_tokens`` (odd length ``1 + 2L``).

    Returns:
        ``(previous_token, induction)``, each ``(n_layers, n_heads)``: mean attention from
        ``i`` to ``i - 1`` (``i >= 1``), and from second-copy positions ``i`` to
        ``i - L + 1``.

    Example:
        >>> from tl_interp.models.zoo import load_induction_2l
        >>> tokens = repeated_tokens(8, 20, generator=torch.Generator().manual_seed(0))
        >>> prev, ind = head_scores(load_induction_2l(), tokens)
        >>> prev.shape, divmod(int(ind.argmax()), ind.shape[1])  # the one induction head
        (torch.Size([2, 3]), (1, 2))
    """
    half_len = (tokens.shape[1] - 1) // 2
    if tokens.shape[1] != 1 + 2 * half_len:
        raise SelectionError(
            f"head_scores expects BOS + r + r sequences of odd length, got length "
            f"{tokens.shape[1]}; build them with repeated_tokens(n, half_len, generator=g)"
        )
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    prev, ind = [], []
    for name in names:
        pattern = cache[name]  # (batch, head, query, key)
        prev.append(pattern.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, -1)))
        # query i, key i - L + 1; keep only queries in the second copy (i >= L + 1).
        diag = pattern.diagonal(offset=-(half_len - 1), dim1=-2, dim2=-1)
        ind.append(diag[..., 2:].mean(dim=(0, -1)))
    return torch.stack(prev), torch.stack(ind)


@checked
def half_losses(
    model: nn.Module,
    tokens: Int[Tensor, "batch pos"],
    *,
    zero_ablate: Sequence[tuple[int, int]] = (),
) -> tuple[float, float]:
    """Mean next-token loss on the first copy of ``r`` and on its repetition.

    Both halves score the same targets, ``r[1:]``: the first time they are unpredictable
    (ideal loss ``ln 64 = 4.16``), the second time an induction head can copy them. The
    first token of each copy is excluded (nothing predicts where a copy starts).

    Args:
        model: the model.
        tokens: sequences made by ``repeated_tokens``.
        zero_ablate: ``(layer, head)`` pairs whose output (``hook_z``) is set to zero for
            this measurement, e.g. ``[(0, 1)]`` to cut one previous-token head.

    Returns:
        ``(first_half_loss, repeated_half_loss)`` in nats per token.

    Example:
        >>> from tl_interp.models.zoo import load_induction_2l
        >>> tokens = repeated_tokens(8, 20, generator=torch.Generator().manual_seed(0))
        >>> first, repeated = half_losses(load_induction_2l(), tokens)
        >>> repeated < first / 5
        True
    """
    half_len = (tokens.shape[1] - 1) // 2
    by_layer: dict[int, list[int]] = {}
    for layer, head in zero_ablate:
        by_layer.setdefault(layer, []).append(head)

    def _zero_heads(z: Float[Tensor, "batch pos head_index d_head"], hook: HookPoint) -> Tensor:
        z = z.clone()
        z[:, :, by_layer[hook.layer()]] = 0.0
        return z

    hooks = [(f"blocks.{layer}.attn.hook_z", _zero_heads) for layer in by_layer]
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):  # removed on exit, always
        logits = model(tokens, return_type="logits")
    log_probs = logits[:, :-1].log_softmax(-1)
    # position p predicts token p + 1
    per_token = -log_probs.gather(-1, tokens[:, 1:, None])[..., 0]  # (batch, pos - 1)
    first = per_token[:, 1:half_len]  # targets at positions 2..L
    repeated = per_token[:, half_len + 1 :]  # targets at positions L+2..2L
    return float(first.mean()), float(repeated.mean())
