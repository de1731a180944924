"""Non-finite numbers and dtype overflow in hooks are refused, never turned into inf or NaN."""

from typing import Any

import pytest
import torch
from torch.testing import assert_close

from tests.conftest import no_hooks_attached
from tests.reliability import no_forward, tiny, tl_run
from tl_interp import hooks, site
from tl_interp.errors import InputError


# -- issue 10's reliability probes (formerly tests/test_reliability_hooks.py) --
TOKENS = torch.randint(1, 61, (2, 5), generator=torch.Generator().manual_seed(0))


# -- issue item 10: non-finite numbers and dtype overflow ----------------------------------
NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("make", [
    lambda: hooks.add(site("resid_pre", 0), torch.full((32,), NAN)),  # probe 10: NaN vector
    lambda: hooks.add(site("resid_pre", 0), torch.ones(32), scale=INF),  # probe 10: inf multiplier
    lambda: hooks.scale(site("resid_pre", 0), NAN),  # probe 10: NaN scale
    lambda: hooks.scale(site("resid_pre", 0), torch.tensor([1.0, INF])),  # own probe: tensor scale
    lambda: hooks.set_component(site("resid_pre", 0), torch.ones(32), NAN),  # probe 10: set_component value
    lambda: hooks.set_component(site("resid_pre", 0), torch.full((32,), INF), 1.0),  # own: its direction
    lambda: hooks.mean_ablate(site("resid_pre", 0), torch.full((32,), NAN)),  # own probe: mean
    lambda: hooks.resample_ablate(site("resid_pre", 0), torch.full((3, 5, 32), INF)),  # own: reference
    lambda: hooks.clamp_features(0, NAN),  # probe 10: clamp value
    lambda: hooks.scale_features(0, INF),  # own probe
    lambda: hooks.add_features(torch.tensor([0.0, NAN])),  # own probe
    lambda: hooks.project_out(site("resid_pre", 0), torch.full((32,), NAN)),  # own probe: basis
])
def test_non_finite_numbers_are_refused_when_the_hook_is_built(make: Any) -> None:
    with pytest.raises(InputError, match="non-finite"):
        make().validate(tiny())  # feature edits refuse when made; hooks at the latest when bound


def test_nan_in_source_activations_is_refused_before_any_forward_pass() -> None:
    # own probe: NaN in source activations
    model = tiny()
    source = torch.randn(2, 5, 32)
    source[1, 2, 3] = NAN
    message = "patch at blocks.0.hook_resid_pre: the source activation has non-finite"
    with no_forward(model), pytest.raises(InputError, match=message):
        hooks.patch(site("resid_pre", 0), source).run(model, TOKENS)


def test_a_vector_that_overflows_float16_is_refused_before_any_forward_pass() -> None:
    # probe 10: "an fp16 model turns a large vector into inf"
    model = tiny(dtype=torch.float16)
    with no_forward(model), pytest.raises(InputError, match=r"1e\+05, beyond the largest torch.float16 value"):
        hooks.add(site("resid_pre", 1), torch.ones(32) * 1e5).run(model, TOKENS)


@pytest.mark.parametrize("make", [
    lambda: hooks.scale(site("resid_pre", 1), 1e6),  # own probe: a factor that overflows fp16
    lambda: hooks.set_component(site("resid_pre", 1), torch.ones(32), 1e6),
    lambda: hooks.mean_ablate(site("resid_pre", 1), torch.full((32,), 1e6)),
    lambda: hooks.patch(site("resid_pre", 1), torch.full((2, 5, 32), 1e6)),
])
def test_an_edit_that_overflows_float16_at_run_time_is_an_error_not_inf(make: Any) -> None:
    model = tiny(dtype=torch.float16)
    with pytest.raises(InputError, match="wrote non-finite values .* into a torch.float16 activation"):
        make().run(model, TOKENS)
    assert no_hooks_attached(model)


def test_bfloat16_holds_a_large_vector_exactly_as_transformer_lens_adds_it() -> None:
    # own probe: bfloat16 has float32's range: the same vector is fine there
    model = tiny(dtype=torch.bfloat16)
    v = torch.ones(32) * 1e5
    expected = tl_run(model, TOKENS, [(site("resid_pre", 1), lambda a, hook: a + v.to(a.dtype))])
    out = hooks.add(site("resid_pre", 1), v).run(model, TOKENS)
    assert bool(out.isfinite().all())
    assert_close(out, expected, rtol=0, atol=0)


def test_a_scale_past_float32_is_refused() -> None:
    # own probe: huge scales
    with no_forward(tiny()), pytest.raises(InputError, match="non-finite|beyond the largest"):
        hooks.add(site("resid_pre", 0), torch.ones(32), scale=1e39).run(tiny(), TOKENS)
