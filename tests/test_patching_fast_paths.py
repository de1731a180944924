"""Patching sweeps on their fast paths equal TransformerLens's patching, with a user's own hooks on
the model, inside an applied intervention, noising, and in low precision."""

from typing import Any

import pytest
import torch
from torch.testing import assert_close
from transformer_lens import patching as tlp

import tl_interp as ti
from tests.conftest import no_hooks_attached
from tests.reliability import tiny
from tests.token_pair import CLEAN, CORRUPTED, METRIC, halve_last, tl_sweep, user_hook
from tl_interp import hooks, site


# -- issue 10's reliability probes (formerly tests/test_reliability_studies.py) --
# -- issue item 6: fast paths and the user's hooks on the head and final block ---------------
def test_a_users_positional_hook_on_ln_final_is_honoured_by_sweeps() -> None:
    # probe 6: "a user's positional hook there gives wrong values (or an IndexError) in sweeps"
    model = tiny()
    with user_hook(model, "ln_final.hook_normalized", halve_last):
        expected = tl_sweep(model)
        got = ti.patching.sweep(model, CLEAN, CORRUPTED, METRIC, progress=False)
        assert "off" in got.provenance.settings["engine"]["read_only"]
    assert_close(got.values, expected, rtol=1e-5, atol=1e-5)


def test_a_users_hook_on_unembed_is_honoured_by_sweeps() -> None:
    # probe 6: a plain PyTorch forward hook on the unembedding, acting at position 0 only
    model = tiny()

    def bump_first(module: Any, inputs: Any, out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        out[:, 0, 3] += 100.0
        return out

    handle = model.unembed.register_forward_hook(bump_first)
    try:
        expected = tl_sweep(model)
        got = ti.patching.sweep(model, CLEAN, CORRUPTED, METRIC, progress=False)
    finally:
        handle.remove()
    assert_close(got.values, expected, rtol=1e-5, atol=1e-5)


def test_a_users_positional_hook_in_the_final_block_is_honoured() -> None:
    # probe 6 for the split-final-block path
    model = tiny()
    with user_hook(model, "blocks.1.hook_resid_mid", halve_last):
        expected = tl_sweep(model)
        got = ti.patching.sweep(model, CLEAN, CORRUPTED, METRIC, progress=False)
    assert_close(got.values, expected, rtol=1e-5, atol=1e-5)


def test_a_sweep_inside_an_applied_intervention_sees_the_intervened_model() -> None:
    # own probe: an outer .applied() (positional) around a study
    model = tiny()
    outer = hooks.zero_ablate(site("z", 1), heads=0, positions=-1)

    def zero_last_head0(a: torch.Tensor, hook: Any) -> torch.Tensor:
        out = a.clone()
        out[:, -1, 0] = 0
        return out

    with user_hook(model, site("z", 1), zero_last_head0):
        expected = tl_sweep(model)
    with outer.applied(model):
        got = ti.patching.sweep(model, CLEAN, CORRUPTED, METRIC, progress=False)
    assert_close(got.values, expected, rtol=1e-5, atol=1e-5)
    assert no_hooks_attached(model)


# -- further probes ------------------------------------------------------------------------------
def test_a_noising_sweep_equals_transformer_lens_patching_corrupted_into_clean() -> None:
    # own probe: direction="noise" is the mirror image (corrupted activations into the clean run)
    model = tiny()
    _, corrupted_cache = model.run_with_cache(CORRUPTED)
    expected = tlp.get_act_patch_resid_pre(model, CLEAN, corrupted_cache, METRIC)
    got = ti.patching.sweep(model, CLEAN, CORRUPTED, METRIC, direction="noise", progress=False)
    assert_close(got.values, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_sweeps_take_the_fast_paths_exactly(dtype: torch.dtype) -> None:
    # own probe: float16 / bfloat16 models, fast paths against the model's full forward
    model = tiny(dtype=dtype)
    fast = ti.patching.sweep(model, CLEAN, CORRUPTED, METRIC, progress=False)
    exact = ti.patching.sweep(model, CLEAN, CORRUPTED, METRIC, progress=False, fast_paths=False)
    assert bool(fast.values.isfinite().all())
    assert_close(fast.values, exact.values, rtol=2e-2, atol=2e-2)
