"""Options of the engine (the memory budget) are checked before any forward pass."""

import pytest
import torch

import tl_interp as ti
from tests.reliability import no_forward, tiny
from tl_interp.errors import OptionError


# -- issue 10's reliability probes (formerly tests/test_reliability_inputs.py) --
TOKENS = torch.randint(1, 61, (2, 5), generator=torch.Generator().manual_seed(0))


# -- options of the engine ---------------------------------------------------------------------
def test_a_zero_memory_budget_is_refused_before_any_forward_pass() -> None:
    # unclear error: prompts_per_pass=0 (now: the memory budget of one stacked pass)
    model = tiny()
    with no_forward(model), pytest.raises(OptionError, match="memory_mb must be positive, got 0.0"):
        ti.patching.sweep(model, TOKENS, TOKENS.flip(0), ti.metrics.logit_diff(1, 2), memory_mb=0.0, progress=False)


def test_the_old_prompts_per_pass_option_is_refused_by_name() -> None:
    # unclear error: prompts_per_pass=0 raised a raw range() error after all passes; the option is gone
    with no_forward(tiny()), pytest.raises(TypeError, match="prompts_per_pass"):
        ti.ablation.scan(tiny(), TOKENS, ti.metrics.logit_diff(1, 2), prompts_per_pass=0, progress=False)


def test_an_integer_memory_budget_is_accepted() -> None:
    # own probe: memory_mb=512 (an int where a float is declared)
    result = ti.patching.sweep(tiny(), TOKENS, TOKENS.flip(0), ti.metrics.logit_diff(1, 2), memory_mb=512,
                               progress=False)
    assert result.values.shape == (2, 5)
