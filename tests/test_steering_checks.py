"""Steering vectors: a feature-space vector only with its own SAE; non-finite and overflowing
vectors and scales refused before any forward pass; steered logits equal hand-written hooks."""

import copy
import functools
from typing import Any

import pytest
import torch
from torch.testing import assert_close

import tl_interp as ti
from tests.reliability import no_forward, ordinal, tl_run
from tl_interp import site
from tl_interp.errors import HookNameError, InputError, OptionError, ShapeError, TypeCheckError
from tl_interp.steering import Controls, SteeringVector


# -- issue 10's reliability probes (formerly tests/test_reliability_steering.py) --
SITE = site("resid_pre", 2)
PROMPTS = ["one , two ,", "january , february , march ,"]
NO_CONTROLS = Controls(random_seeds=(), unrelated_prompts=())


@functools.cache
def sae() -> Any:
    return ti.models.load_sae("ordinal-4l-res-l2")


def vector(scale: float = 1.0) -> SteeringVector:
    return SteeringVector(torch.randn(128, generator=torch.Generator().manual_seed(3)) * scale, SITE, name="v")


def feature_vector(of: Any = None) -> SteeringVector:
    of = of or sae()
    return SteeringVector(torch.zeros(1024).index_fill(0, torch.tensor([5, 9]), 2.0), SITE, space="sae", sae=of,
                          sae_id=ti.steering._build.sae_name(of), name="f")


def renamed_sae(name: str) -> Any:
    other = copy.deepcopy(sae())
    other.card = {**other.card, "name": name}
    return other


# -- issue item 7: an SAE-space vector with a different SAE -----------------------------------
def test_a_feature_space_vector_refuses_another_sae_of_the_same_width() -> None:
    # probe 7: "accepts a different SAE with the same width (and keeps the old sae_id)"
    v = feature_vector()
    with pytest.raises(InputError, match="belongs to the SAE 'ordinal-4l-res-l2'; the SAE given is 'other-sae'"):
        SteeringVector(v.vector, SITE, space="sae", sae=renamed_sae("other-sae"), sae_id=v.sae_id)


def test_loading_a_feature_space_vector_with_another_sae_is_refused(tmp_path: Any) -> None:
    # probe 7 through save/load
    path = feature_vector().save(tmp_path / "f.safetensors")
    with pytest.raises(InputError, match="same width is not the same features"):
        SteeringVector.load(path, sae=renamed_sae("other-sae"))


def test_a_feature_space_vector_at_another_layer_is_refused() -> None:
    # probe 7: "a vector read at one layer with another layer's SAE"
    message = "applied at blocks.1.hook_resid_pre; the SAE given reads blocks.2.hook_resid_pre"
    with pytest.raises(InputError, match=message):
        SteeringVector(torch.zeros(1024), site("resid_pre", 1), space="sae", sae=sae())


def test_decompose_refuses_an_sae_of_another_layer() -> None:
    # probe 7 for decompose
    v = SteeringVector(torch.randn(128), site("resid_pre", 1), name="r")
    with pytest.raises(InputError, match="read at blocks.1.hook_resid_pre, the SAE 'ordinal-4l-res-l2' reads blocks.2"):
        ti.steering.decompose(v, sae(), 4)


def test_a_decomposition_in_sae_space_carries_its_own_saes_identity() -> None:
    # probe 7, correct behaviour: the feature-space vector names the SAE it was decomposed with
    d = ti.steering.decompose(vector(), sae(), 4)
    fv = d.sae_vector()
    assert fv.sae_id == "ordinal-4l-res-l2" and fv.sae is sae()
    assert_close(fv.to_residual().vector.double(), d.part(list(d.features)).double(), rtol=1e-4, atol=1e-4)


def test_a_feature_space_vector_refuses_an_uncarded_sae_with_other_weights() -> None:
    # own probe: SAEs without cards (e.g. two training seeds) are told apart by their weights
    first, second = copy.deepcopy(sae()), copy.deepcopy(sae())
    del first.card, second.card
    with torch.no_grad():
        second.W_dec.copy_(torch.randn_like(second.W_dec))
    v = feature_vector(first)
    with pytest.raises(InputError):
        SteeringVector(v.vector, SITE, space="sae", sae=second, sae_id=v.sae_id)


# -- issue item 10: non-finite and overflowing steering ------------------------------------
NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("call, message", [
    (lambda m: ti.steering.next_token_logits(m, PROMPTS, vector(), [NAN]),
     r"scales must be finite numbers, got \[nan\]"),
    (lambda m: ti.steering.next_token_logits(m, PROMPTS, vector(), INF), r"got \[inf\]"),
    (lambda m: ti.steering.generate(m, PROMPTS, vector(), [1.0, NAN]), "scales must be finite"),
    (lambda m: ti.steering.evaluate(m, {"t": [(PROMPTS[0], "three")]}, vector(), [INF], controls=NO_CONTROLS,
                                    progress=False), "finite numbers"),
])
def test_non_finite_multipliers_are_refused_before_any_forward_pass(call: Any, message: str) -> None:
    # probe 10: next_token_logits, evaluate and generate
    model = ordinal()
    with no_forward(model), pytest.raises(InputError, match=message):
        call(model)


@pytest.mark.parametrize("make", [lambda: vector(NAN), lambda: vector().scaled(NAN), lambda: vector().scaled(1e39)])
def test_non_finite_vectors_are_refused_when_made(make: Any) -> None:
    # probe 10: NaN/inf vectors (a huge multiplier overflows float32 to inf)
    with pytest.raises(InputError, match="has non-finite entries"):
        make()


def test_a_steering_vector_that_overflows_a_float16_model_is_refused() -> None:
    # probe 10: "an fp16 model turns a large vector into inf" -- an error, not inf logits
    model = ti.models.load("ordinal-4l", dtype=torch.float16)
    with pytest.raises(InputError, match="beyond the largest torch.float16 value"):
        ti.steering.next_token_logits(model, PROMPTS, vector(), [1e5])


def test_a_steering_scale_that_overflows_float16_is_refused_before_any_forward_pass() -> None:
    model = ti.models.load("ordinal-4l", dtype=torch.float16)
    with no_forward(model), pytest.raises(InputError, match="beyond the largest torch.float16 value"):
        ti.steering.next_token_logits(model, PROMPTS, vector(), [1e5])


# -- evaluation and application -----------------------------------------------------------
@pytest.mark.parametrize("kwargs, error, message", [
    ({"tasks": {"t": [(PROMPTS[0], "zebra")]}}, InputError, "the answer: 'zebra' is not in the model's vocabulary"),
    ({"n_boot": 0}, OptionError, "n_boot must be at least 1, got 0"),  # unclear error: n_boot=0
    ({"tasks": {}}, InputError, "no tasks given"),  # own probe
    ({"tasks": {"t": []}}, InputError, "task 't' has no prompts"),  # own probe
    ({"tasks": {"t": [PROMPTS[0]]}}, TypeCheckError, r"tasks is .*; it takes Mapping\[str, Sequence\[tuple"),
    ({"vectors": [vector(), vector()]}, InputError, r"vector names must be unique .* \['v'\]"),  # own probe
    ({"scales": []}, InputError, "non-empty list of finite numbers"),  # own probe
])
def test_evaluate_refuses_what_it_cannot_score_before_any_forward_pass(kwargs: dict[str, Any], error: type,
                                                                       message: str) -> None:
    # probe 11: "an answer outside a word-level vocabulary is scored as <unk>"
    model = ordinal()
    positional = {"vectors": vector(), "tasks": {"t": [(PROMPTS[0], "three")]}, "scales": [1.0]}
    options = {k: v for k, v in kwargs.items() if k not in positional}
    args = positional | kwargs
    with no_forward(model), pytest.raises(error, match=message):
        ti.steering.evaluate(model, args["tasks"], args["vectors"], args["scales"], controls=NO_CONTROLS,
                             progress=False, **options)


@pytest.mark.parametrize("v, error, message", [
    (SteeringVector(torch.randn(128), "blocks.9.hook_resid_pre"), HookNameError, "did you mean"),  # own probe
    (SteeringVector(torch.randn(127), SITE), ShapeError, "the vector has 127 entries, the site has d_model=128"),
])
def test_a_vector_that_does_not_fit_the_model_is_refused_before_any_forward_pass(v: SteeringVector, error: type,
                                                                                 message: str) -> None:
    model = ordinal()
    with no_forward(model), pytest.raises(error, match=message):
        ti.steering.next_token_logits(model, PROMPTS, v, [1.0])


def test_steered_next_token_logits_equal_a_hand_written_hook_on_each_prompt() -> None:
    # own probe, correct behaviour: padded prompts, every real token steered, read at each last real token
    model = ordinal()
    v = vector()
    got = ti.steering.next_token_logits(model, PROMPTS, v, [0.0, 3.0])
    for i, prompt in enumerate(PROMPTS):
        tokens = model.to_tokens(prompt)
        assert_close(got[0, 0, i], model(tokens)[0, -1], rtol=1e-5, atol=1e-5)  # scale 0: the unsteered model
        expected = tl_run(model, tokens, [(SITE, lambda a, hook: a + 3.0 * v.vector)])[0, -1]
        assert_close(got[0, 1, i], expected, rtol=1e-5, atol=1e-5)


def test_steering_honours_a_users_positional_hook_on_ln_final() -> None:
    # probe 6 for steering: the read-only head must not replace a hooked ln_final
    model = ordinal()
    v = vector()

    def halve_last(a: torch.Tensor, hook: Any) -> torch.Tensor:
        out = a.clone()
        out[:, -1] *= 0.5
        return out

    tokens = model.to_tokens(PROMPTS[0])
    model.add_hook("ln_final.hook_normalized", halve_last, is_permanent=True)
    try:
        got = ti.steering.next_token_logits(model, PROMPTS[0], v, [2.0], positions="last")
        expected = model.run_with_hooks(tokens, fwd_hooks=[(SITE, lambda a, hook: torch.cat(
            [a[:, :-1], a[:, -1:] + 2.0 * v.vector], 1))])[0, -1]
    finally:
        model.reset_hooks(including_permanent=True)
    assert_close(got[0, 0, 0], expected, rtol=1e-5, atol=1e-5)


def test_steering_the_last_token_of_padded_prompts_steers_each_prompts_own_last_token() -> None:
    # own probe: positions="last" with prompts of different lengths
    model = ordinal()
    v = vector()
    got = ti.steering.next_token_logits(model, PROMPTS, v, [2.0], positions="last")
    for i, prompt in enumerate(PROMPTS):
        tokens = model.to_tokens(prompt)
        steer_last = lambda a, hook: torch.cat([a[:, :-1], a[:, -1:] + 2.0 * v.vector], 1)  # noqa: E731
        expected = tl_run(model, tokens, [(SITE, steer_last)])
        assert_close(got[0, 0, i], expected[0, -1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    ({"target_tokens": []}, "target_tokens is empty"),  # own probe
    ({"controls": Controls(random_seeds=(), unrelated_prompts="a a a a")}, "unrelated_prompts is a list of prompts"),
])
def test_evaluate_refuses_empty_targets_and_a_string_of_controls(kwargs: dict[str, Any], message: str) -> None:
    model = ordinal()
    options = {"controls": NO_CONTROLS} | kwargs
    with no_forward(model), pytest.raises(InputError, match=message):
        ti.steering.evaluate(model, {"t": [(PROMPTS[0], "three")]}, vector(), [1.0], progress=False, **options)
