"""A clean/corrupted pair of token tensors for the tiny random models of ``tests.reliability``
(no padding), its logit-difference metric, and a user's own TransformerLens hook.

Shared by the ablation, patching, attribution and result tests that probe the studies.
"""

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from transformer_lens import patching as tlp

import tl_interp as ti

__all__ = ["CLEAN", "CORRUPTED", "METRIC", "user_hook", "tl_sweep", "halve_last"]

G = torch.Generator().manual_seed(0)
CLEAN = torch.randint(1, 61, (2, 6), generator=G)
CORRUPTED = CLEAN.clone()
CORRUPTED[:, 2] = torch.randint(1, 61, (2,), generator=G)
METRIC = ti.metrics.logit_diff(torch.tensor([3, 7]), torch.tensor([5, 9]), positions=-1)  # unpadded


@contextlib.contextmanager
def user_hook(model: Any, name: str, fn: Any) -> Iterator[None]:
    """A user's own (permanent) TransformerLens hook, removed afterwards."""
    model.add_hook(name, fn, is_permanent=True)
    try:
        yield
    finally:
        model.reset_hooks(including_permanent=True)


def tl_sweep(model: Any) -> torch.Tensor:
    """TransformerLens's residual-stream patching sweep of CLEAN into CORRUPTED (hooks on the model stay)."""
    _, clean_cache = model.run_with_cache(CLEAN)
    return tlp.get_act_patch_resid_pre(model, CORRUPTED, clean_cache, METRIC)


def halve_last(a: torch.Tensor, hook: Any) -> torch.Tensor:
    """A positional hook: halves the last position only."""
    out = a.clone()
    out[:, -1] = out[:, -1] * 0.5
    return out
