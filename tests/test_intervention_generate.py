"""Interventions during generation: positions keep their absolute meaning under the KV cache,
and what generate cannot honour is refused before any forward pass."""

from typing import Any

import pytest
import torch
from torch.testing import assert_close

import tl_interp as ti
from tests.conftest import no_hooks_attached
from tests.reliability import at_positions, no_forward, ordinal
from tl_interp import hooks, site
from tl_interp.errors import HookNameError, InputError, SelectionError, ShapeError, UnsupportedError
from tl_interp.positions import From


# -- issue 10's reliability probes (formerly tests/test_reliability_generation.py) --
SITE, READ = site("resid_pre", 2), site("resid_post", 3)
V = torch.randn(128, generator=torch.Generator().manual_seed(5)) * 4
PROMPT_LEN, NEW = 5, 4  # "one , two ," with BOS
# HookedTransformer's key-value-cached generate: TransformerLens 4's native Bridge regenerates the whole
# sequence at every step and the run context's checks before generate's first forward are not there yet
# for it (issue 25's report lists them), so on TL 4 this module is skipped
pytestmark = pytest.mark.hooked


def generate_recording(model: Any, iv: ti.Intervention, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Generated tokens under ``iv`` (KV cache on) and the final residual of every step, concatenated."""
    steps: list[torch.Tensor] = []
    model.add_hook(READ, lambda a, hook: steps.append(a.detach().clone()))
    try:
        with iv.applied(model):
            out = model.generate(tokens, max_new_tokens=NEW, do_sample=False, verbose=False, use_past_kv_cache=True)
    finally:
        model.reset_hooks()
    return out, torch.cat(steps, 1)


def reference(model: Any, sequence: torch.Tensor, positions: list[int]) -> torch.Tensor:
    """The final residual of one uncached run over ``sequence``, with V added at ``positions``."""
    got: list[torch.Tensor] = []
    with torch.no_grad():  # generate's tokens are inference tensors
        model.run_with_hooks(sequence.clone(), fwd_hooks=[(SITE, at_positions(positions, lambda a: a + V)),
                                                          (READ, lambda a, hook: got.append(a.detach().clone()))])
    return got[0]


@pytest.mark.parametrize("positions, absolute", [
    (0, [0]),  # probe 8: "positions=0 steers every new token once the KV cache is on"
    ([0, 1], [0, 1]),  # probe 8: "positions=[0, 1] raises mid-generation"
    (slice(1, 3), [1, 2]),  # own probe
    (torch.tensor([3]), [3]),  # own probe: one index per row
    (From(2), list(range(2, PROMPT_LEN + NEW - 1))),  # own probe: every token from the third on
    ("all", list(range(PROMPT_LEN + NEW - 1))),  # own probe
    ("last", list(range(PROMPT_LEN - 1, PROMPT_LEN + NEW - 1))),  # each step's newest token
    (-1, list(range(PROMPT_LEN - 1, PROMPT_LEN + NEW - 1))),  # -1: the last position of the sequence so far
])
def test_positions_keep_their_absolute_meaning_under_cached_generation(positions: Any, absolute: list[int]) -> None:
    model = ordinal()
    tokens = model.to_tokens("one , two ,")
    out, steps = generate_recording(model, hooks.add(SITE, V, positions=positions), tokens)
    assert out.shape[1] == PROMPT_LEN + NEW and steps.shape[1] == PROMPT_LEN + NEW - 1
    assert_close(steps, reference(model, out[:, :-1], absolute), rtol=1e-4, atol=1e-4)
    assert no_hooks_attached(model) and "forward" not in model.__dict__


def test_steering_generate_and_an_applied_hook_generate_the_same_tokens() -> None:
    # probe 8: "ti.steering.generate already handles it" -- both ways agree
    model = ordinal()
    vector = ti.steering.SteeringVector(V, SITE, name="v")
    ours = ti.steering.generate(model, "one , two ,", vector, [3.0], positions=0, max_new_tokens=NEW)[0]["completion"]
    out, _ = generate_recording(model, hooks.add(SITE, V, scale=3.0, positions=0), model.to_tokens("one , two ,"))
    assert ours == model.to_string(out[0, PROMPT_LEN:])


def test_a_position_mask_of_the_prompts_length_is_refused_once_the_sequence_grows() -> None:
    # own probe: a (pos,) boolean mask cannot name positions that do not exist yet
    model = ordinal()
    mask = torch.tensor([True, False, False, False, False])
    with pytest.raises(SelectionError, match="during generation the sequence grows"):
        generate_recording(model, hooks.add(SITE, V, positions=mask), model.to_tokens("one , two ,"))
    assert no_hooks_attached(model) and "forward" not in model.__dict__


def test_a_patch_source_of_the_prompt_alone_is_refused_once_the_sequence_grows() -> None:
    # own probe: patching during generation with a source cached on the prompt
    model = ordinal()
    tokens = model.to_tokens("one , two ,")
    source = hooks.cache(SITE).collect(model, tokens)[SITE]
    with pytest.raises(ShapeError, match="during generation the sequence grows past the prompt"):
        generate_recording(model, hooks.patch(SITE, source), tokens)


def test_generation_past_the_context_is_refused_before_any_forward_pass() -> None:
    # probe 3: "generation past it fail[s] inside TransformerLens" (an IndexError after 28 steps)
    model = ordinal()
    message = r"generate \(5 prompt tokens, max_new_tokens=40\): the sequence would reach 44 positions, .* n_ctx=32"
    with no_forward(model), pytest.raises(InputError, match=message):
        with hooks.add(SITE, V).applied(model):
            model.generate(model.to_tokens("one , two ,"), max_new_tokens=40, do_sample=False, verbose=False)
    assert no_hooks_attached(model) and "generate" not in model.__dict__


def test_generation_that_just_fits_the_context_runs() -> None:
    # own probe: 5 prompt tokens + 28 new ones feed 32 positions (the last token is never fed back)
    model = ordinal()
    with hooks.add(SITE, V).applied(model):
        out = model.generate(model.to_tokens("one , two ,"), max_new_tokens=28, do_sample=False, verbose=False,
                             stop_at_eos=False)
    assert out.shape == (1, 33)


def test_an_embedding_hook_that_generate_never_runs_is_reported() -> None:
    # own probe: TransformerLens's generate embeds tokens without hook_embed, so the edit would do nothing
    model = ordinal()
    with pytest.raises(HookNameError, match=r"\['hook_embed'\] never fired"):
        with hooks.add("hook_embed", V).applied(model):
            model.generate(model.to_tokens("one , two ,"), max_new_tokens=2, do_sample=False, verbose=False)
    assert no_hooks_attached(model)


def test_positions_at_a_point_generate_computes_outside_its_forward_calls_are_refused() -> None:
    # own probe: hook_pos_embed fires in generate's own embedding step, whose window nothing describes
    model = ordinal()
    with pytest.raises(UnsupportedError, match="computed outside the model's forward calls while it generates"):
        generate_recording(model, hooks.add("hook_pos_embed", V, positions=0), model.to_tokens("one , two ,"))
    assert no_hooks_attached(model)


def test_an_edit_of_every_position_embedding_during_generation_is_exact() -> None:
    # own probe, correct behaviour: without a selection the edit needs no window
    model = ordinal()
    out, steps = generate_recording(model, hooks.add("hook_pos_embed", V), model.to_tokens("one , two ,"))
    got: list[torch.Tensor] = []
    with torch.no_grad():
        model.run_with_hooks(out[:, :-1].clone(), fwd_hooks=[("hook_pos_embed", lambda a, hook: a + V),
                                                             (READ, lambda a, hook: got.append(a.clone()))])
    assert_close(steps, got[0], rtol=1e-4, atol=1e-4)


def test_steering_generate_past_the_context_is_refused_before_any_forward_pass() -> None:
    # probe 3 for ti.steering.generate
    model = ordinal()
    vector = ti.steering.SteeringVector(V, SITE, name="v")
    with no_forward(model), pytest.raises(InputError, match="max_new_tokens=40 the sequence would pass .* n_ctx=32"):
        ti.steering.generate(model, "one , two ,", vector, [1.0], max_new_tokens=40)
