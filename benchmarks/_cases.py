"""Inputs shared by the benchmarks: a random model and a clean/corrupted patching pair."""

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

import tl_interp as ti


def random_patching_case() -> tuple[HookedTransformer, torch.Tensor, torch.Tensor, ti.metrics.Metric]:
    """A random 6-layer d_model-256 model; 8 clean prompts x 16 tokens, corrupted at position 5; a logit difference."""
    cfg = HookedTransformerConfig(n_layers=6, d_model=256, n_heads=8, d_head=32, d_mlp=1024, d_vocab=2000,
                                  n_ctx=64, act_fn="gelu_new", normalization_type="LN", seed=0)
    model = HookedTransformer(cfg).eval()
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, 2000, (8, 16), generator=g)
    corrupted = clean.clone()
    corrupted[:, 5] = torch.randint(0, 2000, (8,), generator=g)
    metric = ti.metrics.logit_diff(torch.randint(0, 2000, (8,), generator=g), torch.randint(0, 2000, (8,), generator=g))
    return model, clean, corrupted, metric
