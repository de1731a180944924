"""Steering: vectors against hand-computed references, exactness, batching, SAE space, bad input."""

from typing import Any

import numpy as np
import pytest
import torch
from torch.testing import assert_close

import tl_interp as ti
from tl_interp import site
from tl_interp.steering import (
    Controls,
    From,
    SteeringVector,
    contrast_vector,
    contrast_vectors,
    decompose,
    evaluate,
    generate,
    next_token_logits,
    pca_vector,
    sae_contrast_vector,
)
from tl_interp.errors import HookNameError, InputError, ShapeError
from tl_interp.models.zoo.ordinal_data import analogy_tasks, paired_lists

NO_CONTROLS = Controls(random_seeds=(), unrelated_prompts=())


@pytest.fixture(scope="module")
def model() -> Any:
    return ti.models.load("ordinal-4l")


@pytest.fixture(scope="module")
def sae() -> Any:
    return ti.models.load_sae("ordinal-4l-res-l2")


@pytest.fixture(scope="module")
def pairs() -> tuple[list[str], list[str]]:
    return paired_lists("train")


def _last_acts(model: Any, prompts: list[str], name: str) -> torch.Tensor:
    """Reference: TransformerLens's run_with_cache, one unpadded prompt at a time."""
    rows = []
    for p in prompts:
        _, cache = model.run_with_cache(model.to_tokens(p), names_filter=name)
        rows.append(cache[name][0, -1])
    return torch.stack(rows)


# -- vectors -------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", [1, 3])
def test_contrast_vector_is_the_difference_of_per_prompt_means(model: Any, pairs: tuple, layer: int) -> None:
    pos, neg = pairs
    name = site("resid_pre", layer)
    v = contrast_vector(model, pos, neg, name, memory_mb=1e-6)  # one row per pass: batches of mixed lengths
    expected = _last_acts(model, pos, name).mean(0) - _last_acts(model, neg, name).mean(0)
    assert_close(v.vector, expected, atol=1e-5, rtol=0)
    assert (v.hook_name, v.n_positive, v.position_rule) == (name, len(pos), "last")
    assert set(v.source_prompts) == set(pos) | set(neg)


def test_mean_and_fixed_position_rules(model: Any) -> None:
    pos, neg = ["one , two , three ,", "after one comes"], ["january ,", "after may comes"]
    name = site("resid_post", 1)
    v = contrast_vector(model, pos, neg, name, positions="all", reduce="mean")
    ref = [torch.stack([model.run_with_cache(model.to_tokens(p), names_filter=name)[1][name][0].mean(0)
                        for p in ps]).mean(0) for ps in (pos, neg)]
    assert_close(v.vector, ref[0] - ref[1], atol=1e-5, rtol=0)
    with pytest.warns(ti.errors.TlInterpDeprecationWarning, match="positions='all', reduce='mean'"):
        old = contrast_vector(model, pos, neg, name, position="mean")  # the old spelling still works
    assert torch.equal(old.vector, v.vector)
    ad = ti.models.adapt(model)
    pos_b, neg_b = ad.tokenize(pos), ad.tokenize(neg)
    # one index per row differs between the two sets: read each with ti.collect (the reader steering uses)
    pos_v = ti.collect(model, pos_b, name, positions=pos_b.last_index - 1, progress=False)[name].double().mean(0)
    neg_v = ti.collect(model, neg_b, name, positions=neg_b.last_index - 1, progress=False)[name].double().mean(0)
    ref = [torch.stack([model.run_with_cache(model.to_tokens(p), names_filter=name)[1][name][0, -2]
                        for p in ps]).mean(0) for ps in (pos, neg)]
    assert_close((pos_v - neg_v).float(), ref[0] - ref[1], atol=1e-5, rtol=0)


def test_per_layer_vectors_match_single_site_vectors(model: Any, pairs: tuple) -> None:
    pos, neg = pairs
    many = contrast_vectors(model, pos, neg, [site("resid_pre", layer) for layer in range(4)])
    assert [v.layer for v in many] == [0, 1, 2, 3]
    assert_close(many[2].vector, contrast_vector(model, pos, neg, site("resid_pre", 2)).vector, atol=1e-6, rtol=0)
    # At layer 0 only the token and position embeddings exist; paired lists end in the same
    # token at the same position, so the difference is exactly zero.
    assert many[0].norm == 0.0


def test_pca_vector_matches_numpy_svd_and_is_sign_aligned(model: Any, pairs: tuple) -> None:
    pos, neg = pairs
    name = site("resid_pre", 2)
    v = pca_vector(model, pos, neg, name)
    diffs = (_last_acts(model, pos, name) - _last_acts(model, neg, name)).double().numpy()
    _, _, vt = np.linalg.svd(diffs, full_matrices=False)
    direction = torch.from_numpy(vt[0])
    cos = float(v.vector.double() @ direction / v.vector.double().norm())
    assert abs(abs(cos) - 1) < 1e-5
    assert float(torch.from_numpy(diffs).mean(0) @ v.vector.double()) > 0  # points from negative to positive
    centred = pca_vector(model, pos, neg, name, center=True)
    _, _, vt_c = np.linalg.svd(diffs - diffs.mean(0), full_matrices=False)
    assert abs(abs(float(centred.vector.double() @ torch.from_numpy(vt_c[0]))) / centred.norm - 1) < 1e-5


def test_vector_save_load_round_trip(model: Any, pairs: tuple, tmp_path: Any) -> None:
    v = contrast_vector(model, *pairs, site("resid_pre", 1), name="numbers - months")
    w = SteeringVector.load(v.save(tmp_path / "v.safetensors"))
    assert torch.equal(w.vector, v.vector)
    assert (w.name, w.hook_name, w.prompt_hash, w.source_prompts) == (v.name, v.hook_name, v.prompt_hash, v.source_prompts)


# -- application -------------------------------------------------------------------------


def test_multiplier_zero_is_exactly_unsteered(model: Any, pairs: tuple) -> None:
    v = contrast_vector(model, *pairs, site("resid_pre", 1))
    tokens = model.to_tokens(["one , two ,", "after may comes"])
    assert torch.equal(v.intervention(0.0).run(model, tokens), model(tokens))
    tasks = analogy_tasks("heldout")
    rep = evaluate(model, {"months": tasks["months"]}, v.renamed("v"), [0.0, 4.0], controls=NO_CONTROLS,
                   progress=False)
    # scale 0 against a fresh, unhooked forward of every prompt on its own (not the report's own baseline)
    for j, entry in enumerate(rep.meta["prompts"]):
        with torch.no_grad():
            logits = model(model.to_tokens(entry["prompt"]))[0, -1]
        assert int(rep.extras["pp_top1"][0, 0, j]) == int(logits.argmax())
        assert abs(float(rep.extras["pp_prob"][0, 0, j]) - float(logits.softmax(-1)[entry["answer_id"]])) < 1e-6


@pytest.mark.parametrize("rule", ["all", "last", From(2)])
def test_batched_evaluation_equals_prompt_by_prompt_hooks(model: Any, pairs: tuple, rule: Any) -> None:
    vs = [contrast_vector(model, *pairs, site("resid_pre", layer), name=f"L{layer}") for layer in (1, 3)]
    tasks = {k: v[:6] for k, v in analogy_tasks("heldout").items() if k in ("months", "months_sentence", "numbers")}
    mults = [2.0, 8.0]
    rep = evaluate(model, tasks, vs, mults, positions=rule, controls=NO_CONTROLS, progress=False)
    prompts = [p["prompt"] for p in rep.meta["prompts"]]
    answers = [p["answer_id"] for p in rep.meta["prompts"]]
    for i, v in enumerate(vs):
        for k, m in enumerate(mults):
            for j, prompt in enumerate(prompts):  # the way seed 003 did it: one run_with_hooks per prompt
                tokens = model.to_tokens(prompt)
                positions = {"all": None, "last": -1}.get(rule, slice(2, None)) if isinstance(rule, str) else slice(2, None)
                with torch.no_grad():
                    logits = model.run_with_hooks(tokens, fwd_hooks=v.intervention(m, positions).bind(model))[0, -1]
                assert int(rep.extras["pp_top1"][i, k, j]) == int(logits.argmax())
                prob = torch.softmax(logits, -1)[answers[j]]
                assert abs(float(rep.extras["pp_prob"][i, k, j]) - float(prob)) < 1e-5


@pytest.mark.parametrize("rule", ["all", "last"])
def test_full_forward_path_and_fast_paths_equal_hand_written_hooks(model: Any, pairs: tuple, rule: str) -> None:
    v = contrast_vector(model, *pairs, site("resid_mid", 2), name="mid")
    prompts = ["one , two ,", "march , april , may ,", "after july comes"]
    fast = next_token_logits(model, prompts, v, [1.0, 5.0], positions=rule)
    slow = next_token_logits(model, prompts, v, [1.0, 5.0], positions=rule, fast_paths=False)  # the bridge's path
    # reference: one unpadded prompt at a time, scale x vector added by a hand-written hook
    where = slice(None) if rule == "all" else slice(-1, None)
    for k, scale in enumerate([1.0, 5.0]):
        def steer(act: torch.Tensor, hook: Any, scale: float = scale) -> torch.Tensor:
            act = act.clone()
            act[:, where] += scale * v.vector.to(act.dtype)
            return act

        for j, prompt in enumerate(prompts):
            with torch.no_grad():
                expected = model.run_with_hooks(model.to_tokens(prompt), fwd_hooks=[(v.hook_name, steer)])[0, -1]
            assert_close(fast[0, k, j], expected, atol=1e-4, rtol=0)
            assert_close(slow[0, k, j], expected, atol=1e-4, rtol=0)


def test_generation_under_steering(model: Any, pairs: tuple) -> None:
    v = contrast_vector(model, *pairs, site("resid_pre", 1), name="L1")
    w = contrast_vector(model, *pairs, site("resid_post", 2), name="L2 post")
    prompts = ["one , two ,", "march , april ,", "after may comes"]
    both = generate(model, prompts, [v, w], [0.0, 6.0], max_new_tokens=2)
    assert [r["vector"] for r in both] == ["L1"] * 6 + ["L2 post"] * 6
    rows = both[:6]
    assert [r["scale"] for r in rows] == [0.0] * 3 + [6.0] * 3
    assert [r["completion"] for r in both[6:9]] == [r["completion"] for r in rows[:3]]  # x0: the same model
    for r in rows[:3]:  # multiplier 0: exactly the model's own greedy generation
        ref = model.generate(model.to_tokens(r["prompt"]), max_new_tokens=2, do_sample=False, verbose=False)
        assert r["completion"] == model.to_string(ref[0, model.to_tokens(r["prompt"]).shape[1]:])
    assert any(a["completion"] != b["completion"] for a, b in zip(rows[:3], rows[3:]))


# -- SAE space ---------------------------------------------------------------------------


def test_zero_sae_space_vector_changes_nothing_and_one_feature_adds_its_decoder_row(model: Any, sae: Any) -> None:
    hook_name = sae.cfg.metadata.hook_name
    zero = SteeringVector(torch.zeros(sae.cfg.d_sae), hook_name, space="sae", sae=sae)
    tokens = model.to_tokens(["one , two ,", "after may comes"])
    assert torch.equal(zero.intervention(5.0).run(model, tokens), model(tokens))
    # not a splice that never edits: with the error term kept, feature k at scale s adds s x the
    # decoder's row k (reference: a hand-written TransformerLens hook; prompts of one length, no padding)
    tokens = model.to_tokens(["one , two ,", "march , april ,"])
    one = torch.zeros(sae.cfg.d_sae)
    one[17] = 1.0
    steered = SteeringVector(one, hook_name, space="sae", sae=sae).intervention(5.0).run(model, tokens)
    row = sae.W_dec[17].detach()
    expected = model.run_with_hooks(tokens, fwd_hooks=[(hook_name, lambda act, hook: act + 5.0 * row)])
    assert_close(steered, expected, atol=1e-4, rtol=0)
    assert not torch.allclose(steered, model(tokens), atol=1e-2)


def test_sae_space_vector_equals_its_decoded_residual_vector(model: Any, sae: Any, pairs: tuple) -> None:
    v = sae_contrast_vector(model, sae, *pairs, name="sae numbers - months")
    assert v.space == "sae" and v.vector.shape == (sae.cfg.d_sae,)
    # reference: sae-lens encode of the same activations
    acts = [_last_acts(model, p, sae.cfg.metadata.hook_name) for p in pairs]
    with torch.no_grad():
        ref = sae.encode(acts[0]).mean(0) - sae.encode(acts[1]).mean(0)
    assert_close(v.vector, ref, atol=1e-4, rtol=0)
    tokens = model.to_tokens(["march , april ,", "after june comes"])
    in_features = v.intervention(3.0, "last").run(model, tokens)
    in_residual = v.to_residual().intervention(3.0, "last").run(model, tokens)
    assert_close(in_features, in_residual, atol=1e-4, rtol=0)
    dropped = SteeringVector(v.vector, v.hook_name, space="sae", sae=sae, keep_error=False)
    assert not torch.allclose(dropped.intervention(3.0).run(model, tokens), in_features, atol=1e-3)


def test_decompose_recovers_decoder_directions(sae: Any) -> None:
    W = sae.W_dec.detach()
    features, coefs = [17, 400, 901], [3.0, -2.0, 1.5]
    v = SteeringVector(sum(c * W[f] for f, c in zip(features, coefs)), sae.cfg.metadata.hook_name, name="built")
    d = decompose(v, sae, k=10)
    assert sorted(d.features) == sorted(features)  # stops early once explained
    assert d.explained > 1 - 1e-6
    assert_close(torch.tensor([d.coefficients[d.features.index(f)] for f in features]), torch.tensor(coefs),
                 atol=1e-4, rtol=0)
    assert_close(d.ablate([400]).vector, v.vector + 2.0 * W[400], atol=1e-4, rtol=0)
    assert_close(d.keep([17]).vector, 3.0 * W[17], atol=1e-4, rtol=0)
    in_sae = d.sae_vector([17, 901])
    assert in_sae.space == "sae" and float(in_sae.vector[17]) == pytest.approx(3.0, abs=1e-4)
    assert_close(in_sae.to_residual().vector, 3.0 * W[17] + 1.5 * W[901], atol=1e-4, rtol=0)


def test_decompose_a_real_vector_reports_what_it_cannot_explain(model: Any, sae: Any, pairs: tuple) -> None:
    v = contrast_vector(model, *pairs, sae.cfg.metadata.hook_name)
    d = decompose(v, sae, k=8)
    assert len(d.features) == 8 and 0 < d.explained < 1
    assert_close(d.part(list(d.features)) + d.residual, v.vector, atol=1e-4, rtol=0)
    assert list(d.to_frame().columns) == ["rank", "feature", "coefficient", "cosine"]


# -- the battery -------------------------------------------------------------------------


def test_seen_prompts_go_to_their_own_column_and_controls_are_present(model: Any, pairs: tuple) -> None:
    v = contrast_vector(model, *pairs, site("resid_pre", 1), name="v")
    tasks = {"months": analogy_tasks("train")["months"][:4] + analogy_tasks("heldout")["months"][:3]}
    rep = evaluate(model, tasks, v, [4.0], controls=Controls(random_seeds=(0, 1)), progress=False, n_boot=200)
    assert rep.tasks == ("months", "months (seen)", "unrelated")
    assert rep.vectors == ("v", "random ~ v")
    assert len([p for p in rep.meta["prompts"] if p["column"] == "months (seen)"]) == 4
    assert torch.isnan(rep.values[:, :, 2]).all() and not torch.isnan(rep.extras["on_target"][:, :, 2]).any()
    frame = rep.table()
    assert list(frame["vector"]) == ["unsteered", "v", "random ~ v"]
    assert rep.figure().data and rep.sweep_figure("months").data


def test_report_round_trips(model: Any, pairs: tuple, tmp_path: Any) -> None:
    v = contrast_vector(model, *pairs, site("resid_pre", 2), name="v")
    rep = evaluate(model, {"months": analogy_tasks("heldout")["months"]}, v, [2.0, 8.0],
                   controls=Controls(random_seeds=(0,)), progress=False, n_boot=200)
    back = ti.results.Result.load(rep.save(tmp_path / "steer.safetensors"))
    assert type(back).__name__ == "SteeringReport"
    assert torch.equal(back.values.nan_to_num(-1), rep.values.nan_to_num(-1)) and back.meta == rep.meta
    assert back.examples("v", 8.0, "months").equals(rep.examples("v", 8.0, "months"))


def test_numbers_minus_months_on_held_out_months_beats_random_vectors(model: Any, pairs: tuple) -> None:
    """Seed 003's question on ordinal-4l, with the model choice made on training prompts.

    Layer and multiplier are chosen on *training* month sentences (never used to build the
    vector); the effect is then measured on held-out month lists (test and heldout splits)
    against random vectors of the same norm, with paired bootstrap intervals. Measured
    (chosen: layer 3, x16; 10 held-out month lists, 8 random seeds): the top-1 token is a
    number word for 100% of prompts vs 22.5% under random vectors (effect +0.78, 95% CI
    [0.71, 0.84]); the expected number's logit over the unsteered answer's rises by +5.4
    [4.2, 6.8] more than under random vectors. Not found: the number *at the same index*
    (accuracy 0.10 vs 0.04, effect CI [-0.08, 0.29]): the vector moves the answer into the
    numbers domain (mostly "six"/"thirteen"), not to the matching position, and at x16 it
    breaks plain number lists (accuracy 0.12 vs 1.0 unsteered).
    """
    vectors = [v.renamed(f"numbers - months @ L{v.layer}")
               for v in contrast_vectors(model, *pairs, [site("resid_pre", layer) for layer in (1, 2, 3)])]
    mults = [2.0, 4.0, 8.0, 16.0]
    select = evaluate(model, {"months_sentence": analogy_tasks("train")["months_sentence"]}, vectors, mults,
                      controls=NO_CONTROLS, progress=False, n_boot=200)
    top = select.top(1, task="months_sentence", metric="logit_diff", absolute=False)
    best = {"vector": top.columns["vector"][0], "scale": top.columns["scale"][0]}
    held_out = analogy_tasks(("test", "heldout"))
    rep = evaluate(model, {"months": held_out["months"], "numbers": held_out["numbers"]}, vectors, mults,
                   controls=Controls(random_seeds=tuple(range(8))), progress=False)
    domain = rep.compare(best["vector"], best["scale"], "months", metric="on_target")
    shift = rep.compare(best["vector"], best["scale"], "months", metric="logit_diff")
    assert domain["ci_low"] > 0, domain  # a real effect: the interval excludes zero
    assert shift["ci_low"] > 0, shift


# -- bad input fails first ----------------------------------------------------------------


@pytest.fixture
def no_forward(model: Any, monkeypatch: Any) -> Any:
    def boom(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a forward pass ran before the input was checked")

    monkeypatch.setattr(model, "forward", boom)
    return model


def test_bad_input_fails_before_any_forward_pass(no_forward: Any) -> None:
    model = no_forward
    tasks = {"months": [("march , april ,", "five")]}
    narrow = SteeringVector(torch.ones(64), site("resid_pre", 1), name="narrow")
    with pytest.raises(ShapeError, match=r"blocks\.1\.hook_resid_pre.*64 entries.*d_model=128"):
        evaluate(model, tasks, narrow, [1.0], progress=False)
    with pytest.raises(InputError, match="positive prompt set is empty"):
        contrast_vector(model, [], ["january ,"], site("resid_pre", 1))
    with pytest.raises(InputError, match="paired prompts need sets of equal size"):
        pca_vector(model, ["one ,", "two ,"], ["january ,"], site("resid_pre", 1))
    wide = SteeringVector(torch.ones(128), site("resid_pre", 1), name="v")
    with pytest.raises(InputError, match=r"the answer: 'five six' is 2 tokens"):
        evaluate(model, {"months": [("march , april ,", "five six")]}, wide, [1.0], progress=False)
    with pytest.raises(HookNameError, match="resid_pre"):
        evaluate(model, tasks, SteeringVector(torch.ones(128), "blocks.1.hook_resid_pr"), [1.0], progress=False)
    with pytest.raises(InputError, match="names must be unique"):
        evaluate(model, tasks, [wide, wide], [1.0], progress=False)
    with pytest.raises(InputError, match="task 'months' has no prompts"):
        evaluate(model, {"months": []}, wide, [1.0], progress=False)


def _retrained(sae: Any, seed: int = 5) -> Any:
    """A copy with the same card (same name) and other weights: a retrained SAE of the same name."""
    import copy

    other = copy.deepcopy(sae)
    with torch.no_grad():
        other.W_dec.add_(0.1 * torch.randn(other.W_dec.shape, generator=torch.Generator().manual_seed(seed)))
    return other


@pytest.mark.parametrize("edit", ["W_dec", "W_enc", "b_enc", "b_dec"])
def test_a_feature_space_vector_refuses_an_sae_with_its_card_name_but_other_weights(sae: Any, tmp_path: Any,
                                                                                   edit: str) -> None:
    # issue 19 item 8: identity was the card name when a card exists, so a retrained SAE of the same name passed
    v = sae_contrast_vector(ti.models.load("ordinal-4l"), sae, ["one , two ,"], ["january , february ,"])
    import copy

    other = copy.deepcopy(sae)
    with torch.no_grad():
        getattr(other, edit).add_(0.01)
    assert other.card["name"] == sae.card["name"]
    message = (r"was built with SAE weights of digest [0-9a-f]{16}; the SAE given \('ordinal-4l-res-l2'\) has weights "
               r"of digest [0-9a-f]{16}: a matching name is not the same features")
    path = v.save(tmp_path / "v.safetensors")
    with pytest.raises(InputError, match=message):
        SteeringVector.load(path, sae=other)
    with pytest.raises(InputError, match=message):
        SteeringVector(v.vector, v.hook_name, space="sae", sae=other, sae_id=v.sae_id, sae_digest=v.sae_digest)
    again = SteeringVector.load(path, sae=sae)  # its own SAE (or an identical copy) still loads
    assert again.sae_digest == v.sae_digest == ti.steering._vector.sae_digest(copy.deepcopy(sae))
    assert torch.equal(again.vector, v.vector)


def test_a_vector_saved_before_weight_digests_loads_with_a_warning(sae: Any, tmp_path: Any) -> None:
    import json

    from tl_interp._io import load_checked, save_checked
    from tl_interp.errors import TlInterpWarning

    v = SteeringVector(torch.zeros(sae.cfg.d_sae), sae.cfg.metadata.hook_name, space="sae", sae=sae)
    tensors, header = load_checked(v.save(tmp_path / "v.safetensors"), fix="")
    meta = json.loads(header["tl_interp.steering_vector"])
    del meta["sae_digest"]  # as files written before this check
    old = save_checked(tmp_path / "old.safetensors", tensors, {"tl_interp.steering_vector": json.dumps(meta)})
    with pytest.warns(TlInterpWarning, match="only the SAE's name .* can be checked, not its weights"):
        w = SteeringVector.load(old, sae=_retrained(sae))
    assert w.sae_digest == ti.steering._vector.sae_digest(w.sae)
