"""Inputs shared by the benchmarks: a random model and a clean/corrupted patching pair."""

from typing import Any

import torch

import tl_interp as ti


def random_patching_case() -> tuple[Any, torch.Tensor, torch.Tensor, ti.metrics.Metric]:
    """A random 6-layer d_model-256 model; 8 clean prompts x 16 tokens, corrupted at position 5; a logit difference.

    A HookedTransformer on TransformerLens 3.9; on 4.x (no HookedTransformer) a native TransformerBridge
    of the same architecture in compatibility mode (its own random initialisation: the same shapes and
    work, not the same weights)."""
    fields = dict(n_layers=6, d_model=256, n_heads=8, d_head=32, d_mlp=1024, d_vocab=2000,
                  n_ctx=64, act_fn="gelu_new", normalization_type="LN", seed=0)
    hooked = ti.compat.tl.hooked_transformer_class()
    if hooked is None:
        model = ti.compat.tl.native_bridge(fields, None, name="random 6L d256")
    else:
        model = hooked(ti.compat.tl.hooked_config_class()(**fields)).eval()
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, 2000, (8, 16), generator=g)
    corrupted = clean.clone()
    corrupted[:, 5] = torch.randint(0, 2000, (8,), generator=g)
    # positions=-1: the rows are unpadded, and TransformerLens's patching calls metric(logits) without a batch
    metric = ti.metrics.logit_diff(torch.randint(0, 2000, (8,), generator=g), torch.randint(0, 2000, (8,), generator=g),
                                   positions=-1)
    return model, clean, corrupted, metric
