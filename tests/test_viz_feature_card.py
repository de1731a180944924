"""SAE feature cards: top contexts, logits and ablation effects equal independent references."""

import copy
import inspect
import re
from typing import Any

import pytest
import torch

import tl_interp as ti
from tl_interp.errors import InputError, SelectionError, TlInterpDeprecationWarning
from tl_interp.models.saes import splice_positions

from tests.conftest import PlanRecorder
from tests.test_viz_views import no_network  # noqa: F401 - the fixture

pytestmark = pytest.mark.usefixtures("no_network")
PROMPTS = ["one, two, three,", "january, february, march,", "monday, tuesday,", "five, six, seven, eight,",
           "uno, dos, tres,", "march, april,", "two, three, four, five, six,", "friday, saturday, sunday,"]


@pytest.fixture(scope="module")
def ordinal() -> tuple[Any, Any]:
    return ti.models.load("ordinal-4l"), ti.models.load_sae("ordinal-4l-res-l2")


@torch.no_grad()
def brute_force_contexts(model: Any, sae: Any, prompts: list[str], feature: int) -> list[tuple[float, int, int]]:
    """(activation, prompt, position) of every read position, each prompt run alone, sorted by hand."""
    adapter, name = ti.models.adapt(model), sae.cfg.metadata.hook_name
    first = splice_positions(sae).start or 0
    found = []
    for p, text in enumerate(prompts):
        _, cache = model.run_with_cache(adapter.tokenize(text).tokens, names_filter=name)
        acts = sae.encode(cache[name])[0, :, feature]
        found += [(float(acts[pos]), p, pos) for pos in range(first, acts.shape[0])]
    return sorted(found, key=lambda t: -t[0])


def test_top_contexts_equal_a_brute_force_sort(ordinal: tuple[Any, Any]) -> None:
    model, sae = ordinal
    batch = ti.models.adapt(model).tokenize(PROMPTS)
    _, cache = model.run_with_cache(batch.tokens, attention_mask=batch.attention_mask)
    peaks = sae.encode(cache[sae.cfg.metadata.hook_name])[:, 1:].amax((0, 1))
    feature = int(peaks.argmax())
    card = ti.viz.feature_card(model, sae, PROMPTS, feature, k=6)
    brute = [t for t in brute_force_contexts(model, sae, PROMPTS, feature) if t[0] > 0][:6]
    assert len(card.contexts) == len(brute) > 0
    assert [(c.prompt, c.pos) for c in card.contexts] == [(p, pos) for _, p, pos in brute]
    torch.testing.assert_close(torch.tensor([c.activation for c in card.contexts]),
                               torch.tensor([a for a, _, _ in brute]), rtol=1e-5, atol=1e-5)
    top = card.contexts[0]
    assert top.tokens[top.focus] == batch.str_tokens[top.prompt][top.pos]
    assert top.values[top.focus] == top.activation
    n_read = int(batch.attention_mask[:, 1:].sum())
    assert card.n_tokens == n_read and card.n_active == sum(t[0] > 0 for t in brute_force_contexts(
        model, sae, PROMPTS, feature))
    assert sum(card.counts) == card.n_active


def test_decoder_logits_are_w_dec_times_w_u(ordinal: tuple[Any, Any]) -> None:
    # W_U as TransformerLens's processing leaves it (as sae_vis reads it), whether the model was processed or not
    model, sae = ordinal
    card = ti.viz.feature_card(model, sae, PROMPTS[:3], 17)
    processed = copy.deepcopy(model)
    processed.process_weights_(fold_ln=True, center_writing_weights=True, center_unembed=True)
    logits = sae.W_dec[17].double() @ processed.W_U.double()
    top, bottom = logits.topk(10), logits.topk(10, largest=False)
    assert [t for t, _ in card.top_logits] == [model.to_string(int(i)) for i in top.indices]
    torch.testing.assert_close(torch.tensor([v for _, v in card.bottom_logits], dtype=torch.float64), bottom.values)


def test_ablation_effect_equals_removing_the_features_decoder_contribution(ordinal: tuple[Any, Any]) -> None:
    model, sae = ordinal
    answers = [" four", " april", " wednesday", " nine", " cuatro", " may", " seven", " monday"]
    answers = [a.strip() for a in answers]
    batch = ti.models.adapt(model).tokenize(PROMPTS)
    name = sae.cfg.metadata.hook_name
    _, cache = model.run_with_cache(batch.tokens, attention_mask=batch.attention_mask, names_filter=name)
    feature = int(sae.encode(cache[name])[:, 1:].amax((0, 1)).argmax())
    card = ti.viz.feature_card(model, sae, PROMPTS, feature, answers=answers)

    # the decoder is linear, so zeroing feature f removes exactly f's activation times W_dec[f]
    def remove_feature(act: torch.Tensor, hook: Any) -> torch.Tensor:
        f = sae.encode(act)[..., feature]
        out = act.clone()
        out[:, 1:] -= (f[:, 1:, None] * sae.W_dec[feature])
        return out

    logits = model.run_with_hooks(batch.tokens, attention_mask=batch.attention_mask, fwd_hooks=[(name, remove_feature)])
    ids = torch.tensor([int(ti.models.adapt(model).tokenize(a, prepend_bos=False).tokens[0, 0]) for a in answers])
    rows = torch.arange(len(PROMPTS))
    expected = logits[rows, batch.last_index].softmax(-1)[rows, ids].double()
    torch.testing.assert_close(card.p_ablated, expected, rtol=1e-4, atol=1e-6)
    clean = model(batch.tokens, attention_mask=batch.attention_mask)[rows, batch.last_index].softmax(-1)[rows, ids]
    torch.testing.assert_close(card.p_clean, clean.double(), rtol=1e-4, atol=1e-6)
    assert card.effect == pytest.approx(float((card.p_ablated - card.p_clean).mean()))
    assert card.ci is not None and card.ci[0] <= card.effect <= card.ci[1]
    page = card._repr_html_()
    assert f"Feature {feature}" in page and "<svg" in page and "<script" not in page


@pytest.fixture
def no_forward(ordinal: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """The ordinal model and SAE, with a forward pass that fails: a check must refuse before any runs."""
    model, sae = ordinal

    def fail(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a forward pass ran before the bad argument was refused")

    monkeypatch.setattr(model, "forward", fail)
    return model, sae


def test_a_feature_beyond_the_sae_width_fails_before_any_forward(no_forward: tuple[Any, Any]) -> None:
    model, sae = no_forward
    with pytest.raises(SelectionError, match=r"feature 1024 is out of range: .* d_sae=1024 features \(0..1023\)"):
        ti.viz.feature_card(model, sae, PROMPTS, 1024)
    with pytest.raises(SelectionError, match="feature -1 is out of range"):
        ti.viz.feature_card(model, sae, PROMPTS, -1)


def test_answers_must_be_one_single_token_per_prompt(ordinal: tuple[Any, Any]) -> None:
    model, sae = ordinal
    with pytest.raises(InputError, match="2 answers for 3 prompts"):
        ti.viz.feature_card(model, sae, PROMPTS[:3], 0, answers=["four", "april"])


def test_feature_page_has_a_topk_view_and_one_card_per_top_feature(ordinal: tuple[Any, Any]) -> None:
    model, sae = ordinal
    report = ti.viz.feature_page(model, sae, PROMPTS, n_features=3)
    page = report.html()
    assert page.count("class='tl-interp-feature'") == 3
    assert page.count('data-element="TopkSamples"') == 1


def test_feature_pages_count_is_n_features_and_its_old_name_n_warns_with_the_same_page(
        ordinal: tuple[Any, Any]) -> None:
    # n counted features while k counted each card's contexts: the feature count is n_features now,
    # and k keeps its meaning, so an old call changes nothing but the warning
    model, sae = ordinal
    today = ti.viz.feature_page(model, sae, PROMPTS, n_features=2, k=3)
    with pytest.warns(TlInterpDeprecationWarning, match=r"feature_page\(n=...\) is now n_features="):
        old = ti.viz.feature_page(model, sae, PROMPTS, n=2, k=3)
    def same(page: Any) -> str:
        return re.sub(r"tlcv-[0-9a-f]+", "tlcv-", page.html())  # view element ids are random

    assert same(old) == same(today) and today.html().count("class='tl-interp-feature'") == 2
    assert "n" not in inspect.signature(ti.viz.feature_page).parameters


def test_a_page_of_more_features_than_the_sae_has_fails_before_any_forward(no_forward: tuple[Any, Any]) -> None:
    model, sae = no_forward
    with pytest.raises(SelectionError, match=r"feature_page: n_features=1025 is out of range: there are 1024 features "
                                             r"\(d_sae\); choose 1 <= n_features <= 1024"):
        ti.viz.feature_page(model, sae, PROMPTS, n_features=1025)


def test_a_card_shows_at_most_k_contexts_and_only_where_the_feature_is_active(ordinal: tuple[Any, Any]) -> None:
    # the one count that may come out smaller than asked: how many contexts are active is known only after the run
    model, sae = ordinal
    card = ti.viz.feature_card(model, sae, PROMPTS, 5, k=1000)
    assert len(card.contexts) == card.n_active <= card.n_tokens < 1000
    assert all(c.activation > 0 for c in card.contexts)
    assert len(ti.viz.feature_card(model, sae, PROMPTS, 5, k=1).contexts) == min(1, card.n_active)


@pytest.mark.real_model
def test_smollm2_feature_card_contexts_equal_a_brute_force_sort() -> None:
    model, sae = ti.models.load("smollm2-135m"), ti.models.load_sae("smollm2-135m-res-l15")
    prompts = ["<|im_start|>The function returns a list of strings.", "<|im_start|>import os\nimport sys",
               "<|im_start|>January, February, March, April,", "<|im_start|>Raise a ValueError if the key is missing."]
    batch = ti.models.adapt(model).tokenize(prompts)
    name = sae.cfg.metadata.hook_name
    _, cache = model.run_with_cache(batch.tokens, attention_mask=batch.attention_mask, names_filter=name)
    feature = int(sae.encode(cache[name])[:, 2:].amax((0, 1)).argmax())
    card = ti.viz.feature_card(model, sae, prompts, feature, k=5)
    brute = [t for t in brute_force_contexts(model, sae, prompts, feature) if t[0] > 0][:5]
    assert [(c.prompt, c.pos) for c in card.contexts] == [(p, pos) for _, p, pos in brute]
    torch.testing.assert_close(torch.tensor([c.activation for c in card.contexts]),
                               torch.tensor([a for a, _, _ in brute]), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("memory_mb", [1024.0, 0.05])
def test_feature_ablation_cells_equal_one_hook_run_per_feature(ordinal: tuple[Any, Any], memory_mb: float) -> None:
    model, sae = ordinal
    batch = ti.models.adapt(model).tokenize(PROMPTS)
    name, features = sae.cfg.metadata.hook_name, [3, 17, 40, 512]
    executor = PlanRecorder()
    res = ti.ablation.feature_ablation(model, sae, PROMPTS, features, memory_mb=memory_mb, executor=executor,
                                       progress=False)
    rows = torch.arange(len(PROMPTS))
    with torch.no_grad():
        clean = model(batch.tokens, attention_mask=batch.attention_mask)[rows, batch.last_index]
        ids = clean.argmax(-1)  # the default answer: the model's own top token
        expected = []
        for feature in features:  # sae-lens encode/decode and a TL hook written here, one forward pass each
            def remove(act: torch.Tensor, hook: Any, feature: int = feature) -> torch.Tensor:
                f = sae.encode(act)
                edited = f.clone()
                edited[..., feature] = 0
                out = act.clone()
                out[:, 1:] = act[:, 1:] + (sae.decode(edited) - sae.decode(f))[:, 1:]
                return out

            logits = model.run_with_hooks(batch.tokens, attention_mask=batch.attention_mask, fwd_hooks=[(name, remove)])
            expected.append(logits[rows, batch.last_index].softmax(-1)[rows, ids])
    assert torch.equal(res.extras["answers"], ids)
    torch.testing.assert_close(res.extras["p_clean"], clean.softmax(-1)[rows, ids].double(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(res.extras["p_ablated"], torch.stack(expected).double(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(res.values, (res.extras["p_ablated"] - res.extras["p_clean"]).mean(-1))
    (plan,) = executor.plans
    assert len(plan.cells) == len(features) and plan.options.memory_mb == memory_mb
    assert res.provenance.settings["engine"]["mid_stack"] == "on"
    assert res.top(1, absolute=False, largest=False).labels == (f"F{features[int(res.values.argmin())]}",)


def test_feature_ablation_refuses_bad_requests_before_any_forward_pass(ordinal: tuple[Any, Any]) -> None:
    from tests.reliability import no_forward

    model, sae = ordinal
    with no_forward(model):
        with pytest.raises(SelectionError, match="feature 1024 is out of range"):
            ti.ablation.feature_ablation(model, sae, PROMPTS, [1, 1024], progress=False)
        with pytest.raises(InputError, match=r"feature ablation answers: 'four five' is 2 tokens"):
            ti.ablation.feature_ablation(model, sae, PROMPTS[:2], [1], answers=["four", "four five"], progress=False)
        with pytest.raises(ti.OptionError, match="memory_mb must be positive"):
            ti.viz.feature_card(model, sae, PROMPTS, 1, memory_mb=0)


def test_a_page_of_cards_equals_its_cards_one_by_one(ordinal: tuple[Any, Any]) -> None:
    # the page ablates its three features as cells of one plan; each card alone is a plan of one cell
    model, sae = ordinal
    page = ti.viz.feature_page(model, sae, PROMPTS, n_features=3).html()
    batch = ti.models.adapt(model).tokenize(PROMPTS)
    _, cache = model.run_with_cache(batch.tokens, attention_mask=batch.attention_mask)
    peaks = sae.encode(cache[sae.cfg.metadata.hook_name])[:, 1:].amax((0, 1))
    for feature in peaks.argsort(descending=True)[:3].tolist():
        assert ti.viz.feature_card(model, sae, PROMPTS, feature).html() in page


# -- what the card looks like (its HTML, from a card built by hand) ------------------------------
def _card(n_active: int, n_tokens: int, tokens: tuple[str, ...] = ("\n", " ", " cat", "\t", " sat")) -> Any:
    from tl_interp.viz.feature_card import Context, FeatureCard

    values = (0.0, 4.0, 1.0, 2.0, 4.0)
    context = Context(0, 1, 4.0, tokens, values, 1)
    return FeatureCard(feature=3, hook_name="blocks.2.hook_resid_pre", model_id="m", contexts=(context,),
                       counts=(1.0, 2.0), edges=(0.0, 2.0, 4.0), n_tokens=n_tokens, n_active=n_active,
                       top_logits=(("\n", 1.5),), bottom_logits=((" ", -1.5),), answers=("\n", " x"),
                       p_clean=torch.tensor([0.5, 0.4]), p_ablated=torch.tensor([0.3, 0.4]), effect=-0.1,
                       ci=(-0.2, 0.0), seed=0)


def _contrast(a: str, b: str) -> float:
    from tl_interp.viz.html import _luminance

    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_highlighted_tokens_have_readable_text_on_every_shade() -> None:
    import re

    from tl_interp.viz.html import colored_spans

    page = colored_spans([str(i) for i in range(21)], [v / 10 for v in range(-10, 11)])
    pairs = re.findall(r"background:(#[0-9a-f]{6});color:(#[0-9a-f]{3})", page)
    assert len(pairs) == 21
    worst = min(_contrast(bg, fg.replace("#fff", "#ffffff").replace("#000", "#000000")) for bg, fg in pairs)
    assert worst >= 4.5  # WCAG AA for normal text; black on the darkest red was 3.1, on blue 3.6
    assert ("#2166ac", "#fff") in pairs and ("#ffffff", "#000") in pairs


def test_whitespace_tokens_show_as_visible_marks_not_blank_rows() -> None:
    page = _card(2, 48).html()
    assert ">↵</span>" in page and ">␣</span>" in page and ">⇥</span>" in page and "> cat</span>" in page
    assert "<td style=\"padding:2px 6px;border:1px solid #ddd\">↵</td>" in page  # the logit table and answers
    assert "<td style=\"padding:2px 6px;border:1px solid #ddd\">␣</td>" in page


def test_a_dense_feature_is_flagged_and_a_sparse_one_is_not() -> None:
    dense, sparse = _card(48, 48), _card(3, 48)
    assert dense.dense and "dense: active on 48 of 48 tokens" in dense.html() and "tl-dense" in dense.html()
    assert not sparse.dense and "tl-dense" not in sparse.html()
    assert "(dense)" in repr(dense) and "(dense)" not in repr(sparse)
    assert _card(24, 48).dense and not _card(23, 48).dense  # the threshold: half the tokens read


def test_a_card_saved_as_html_is_a_whole_page_with_the_card(tmp_path: Any) -> None:
    card = _card(48, 48)
    text = card.save(tmp_path / "card.html").read_text()
    assert text.startswith("<!doctype html>") and card.html() in text
