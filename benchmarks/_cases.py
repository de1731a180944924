"""Inputs shared by the benchmarks: a random model and a clean/corrupted patching pair."""

from collections.abc import Callable, Sequence
from typing import Any

import torch

import tl_interp as ti


def random_patching_case(*, d_vocab: int = 2000, corrupt: Sequence[int] = (5,), plain: bool = False
                         ) -> tuple[Any, torch.Tensor, torch.Tensor, Callable[..., torch.Tensor]]:
    """A random 6-layer d_model-256 model; 8 clean prompts x 16 tokens, corrupted at positions
    ``corrupt``; a logit difference (a ``ti.metrics`` metric, or with ``plain`` the same as a
    plain function of the logits, TransformerLens's convention).

    A HookedTransformer on TransformerLens 3.9; on 4.x (no HookedTransformer) a native TransformerBridge
    of the same architecture in compatibility mode (its own random initialisation: the same shapes and
    work, not the same weights)."""
    fields = dict(n_layers=6, d_model=256, n_heads=8, d_head=32, d_mlp=1024, d_vocab=d_vocab,
                  n_ctx=64, act_fn="gelu_new", normalization_type="LN", seed=0)
    hooked = ti.compat.tl.hooked_transformer_class()
    if hooked is None:
        model = ti.compat.tl.native_bridge(fields, None, name="random 6L d256")
    else:
        model = hooked(ti.compat.tl.hooked_config_class()(**fields)).eval()
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, d_vocab, (8, 16), generator=g)
    corrupted = clean.clone()
    corrupted[:, list(corrupt)] = torch.randint(0, d_vocab, (8, len(corrupt)), generator=g)
    correct, wrong = torch.randint(0, d_vocab, (8,), generator=g), torch.randint(0, d_vocab, (8,), generator=g)
    # positions=-1: the rows are unpadded, and TransformerLens's patching calls metric(logits) without a batch
    metric = plain_logit_diff(correct, wrong) if plain else ti.metrics.logit_diff(correct, wrong, positions=-1)
    return model, clean, corrupted, metric


def plain_logit_diff(correct: torch.Tensor, wrong: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """logit(correct) - logit(wrong) at the last position, averaged over prompts: the plain
    function TransformerLens's patching tutorials write (for unpadded prompts)."""
    rows = torch.arange(len(correct))

    def logit_diff(logits: torch.Tensor) -> torch.Tensor:
        return (logits[rows, -1, correct] - logits[rows, -1, wrong]).mean()

    return logit_diff
