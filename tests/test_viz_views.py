"""circuitsvis views draw exactly the model's numbers, with circuitsvis's own props, offline."""

import json
import re
import socket
from typing import Any

import circuitsvis.attention
import circuitsvis.logits
import circuitsvis.topk_tokens
import pytest
import torch

import tl_interp as ti
from tl_interp import hooks, site
from tl_interp.errors import InputError, OptionError, SelectionError, ShapeError, TlInterpDeprecationWarning
from tl_interp.viz import _circuitsvis
from tl_interp.viz._circuitsvis import BUNDLE_MARKER



@pytest.fixture(scope="module")
def induction() -> Any:
    return ti.models.load("induction-2l")


@pytest.fixture(scope="module")
def ordinal() -> Any:
    return ti.models.load("ordinal-4l")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a render path opened a network connection to {args[1:]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def circuitsvis_props(module: Any, fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """The props circuitsvis's own Python function passes to its renderer (the reference)."""
    captured: dict[str, Any] = {}

    def capture(element: str, **props: Any) -> None:
        captured.update(element=element, props=props)

    original = module.render
    module.render = capture
    try:
        fn(*args, **kwargs)
    finally:
        module.render = original
    return captured


def as_json(props: Any) -> Any:
    return json.loads(_circuitsvis.props_json(props))


def forward_forbidden(model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a forward pass ran before the bad input was refused")

    monkeypatch.setattr(model, "forward", fail)


def test_attention_patterns_equal_run_with_cache(induction: Any) -> None:
    tokens = torch.tensor([[0, 11, 12, 13, 14, 11, 12, 13]])
    view = ti.viz.attention(induction, tokens, layer=1, heads=[2, 0])
    _, cache = induction.run_with_cache(tokens)
    expected = cache["pattern", 1][0, [2, 0]].double()
    torch.testing.assert_close(view.data["patterns"], expected, rtol=0, atol=0)
    widget = view.panels[0].widget
    assert widget.element == "AttentionHeads"
    assert widget.props["attentionHeadNames"] == ["L1H2", "L1H0"]
    assert as_json(widget.props)["attention"] == expected.tolist()


def test_attention_props_are_circuitsvis_own(induction: Any) -> None:
    tokens = torch.tensor([0, 5, 6, 7, 5, 6])
    view = ti.viz.attention(induction, tokens, layer=0)
    ref = circuitsvis_props(circuitsvis.attention, circuitsvis.attention.attention_heads, view.data["patterns"],
                            view.data["tokens"], attention_head_names=["L0H0", "L0H1", "L0H2"])
    assert ref["element"] == view.panels[0].widget.element
    assert as_json(ref["props"]) == as_json(view.panels[0].widget.props)


def test_attention_removes_padding_and_matches_the_prompt_alone(ordinal: Any) -> None:
    prompts = ["one, two, three, four,", "may, june,"]
    view = ti.viz.attention(ordinal, prompts, layer=1, heads=[3], row=1)
    alone = ti.models.adapt(ordinal).tokenize(prompts[1])
    _, cache = ordinal.run_with_cache(alone.tokens)
    assert view.data["tokens"] == alone.str_tokens[0] and "<pad>" not in view.data["tokens"]
    torch.testing.assert_close(view.data["patterns"], cache["pattern", 1][0, [3]].double())


def test_attention_under_an_intervention_shows_both(induction: Any) -> None:
    tokens = torch.tensor([[0, 11, 12, 13, 14, 11, 12, 13]])
    iv = hooks.zero_ablate(site("z", 0))
    view = ti.viz.attention(induction, tokens, layer=1, heads=[2], intervention=iv)
    with iv.applied(induction):
        _, cache = induction.run_with_cache(tokens)
    torch.testing.assert_close(view.data["patterns_intervened"], cache["pattern", 1][0, [2]].double())
    assert not torch.allclose(view.data["patterns"], view.data["patterns_intervened"])
    assert [p.caption for p in view.panels] == ["unmodified", "under the intervention"]
    assert "zero-ablate" in view.note


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"layer": 2}, r"induction-2l: layer 2 is out of range; the model has layers 0..1"),
    ({"layer": -1}, r"layer -1 is out of range"),
    ({"layer": 1, "heads": [1, 3]}, r"head 3 is out of range: induction-2l has 3 heads per layer \(0..2\)"),
    ({"layer": 1, "heads": []}, r"heads=\[\] selects nothing"),
    ({"layer": 1, "row": 4}, r"row 4 is out of range for 1 prompts"),
])
def test_attention_refuses_bad_selections_before_any_forward(induction: Any, monkeypatch: pytest.MonkeyPatch,
                                                              kwargs: dict[str, Any], message: str) -> None:
    forward_forbidden(induction, monkeypatch)
    with pytest.raises(SelectionError, match=message):
        ti.viz.attention(induction, torch.tensor([0, 1, 2]), **kwargs)


def test_tokens_draws_exactly_a_patching_results_values(ordinal: Any) -> None:
    adapter = ti.models.adapt(ordinal)
    clean, corrupted = adapter.tokenize(["one, two, three,"]), adapter.tokenize(["five, six, seven,"])
    four, eight = (int(adapter.tokenize(w, prepend_bos=False).tokens[0, 0]) for w in ("four", "eight"))
    metric = ti.metrics.logit_diff(four, eight)
    result = ti.patching.sweep(ordinal, clean.tokens, corrupted.tokens, metric, site="resid_pre", progress=False)
    view = ti.viz.tokens(result.labels["pos"], result.values[2], title="patching effect, layer 2")
    assert view.panels[0].widget.element == "ColoredTokens"
    torch.testing.assert_close(view.data["values"][:, 0], result.values[2].double(), rtol=0, atol=0)
    assert as_json(view.panels[0].widget.props)["values"] == result.values[2].double().tolist()
    assert view.data["tokens"] == list(result.labels["pos"])

    multi = ti.viz.tokens(result.labels["pos"], {f"L{i}": result.values[i] for i in range(4)})
    assert multi.panels[0].widget.element == "ColoredTokensMulti"
    torch.testing.assert_close(multi.data["values"], result.values.T.double(), rtol=0, atol=0)
    assert multi.data["labels"] == ["L0", "L1", "L2", "L3"]


def test_tokens_refuses_values_that_do_not_fit() -> None:
    with pytest.raises(ShapeError, match="3 tokens but 2 values per quantity"):
        ti.viz.tokens(["a", "b", "c"], [1.0, 2.0])
    with pytest.raises(ShapeError, match="different lengths"):
        ti.viz.tokens(["a", "b"], {"x": [1.0, 2.0], "y": [1.0]})
    with pytest.raises(ShapeError, match="1 labels for 2 quantities"):
        ti.viz.tokens(["a", "b"], torch.ones(2, 2), labels=["only"])
    with pytest.raises(InputError, match="NaN or inf"):
        ti.viz.tokens(["a", "b"], [1.0, float("nan")])


def test_top_activations_orders_prompts_by_their_peak_like_a_brute_force_sort() -> None:
    gen = torch.Generator().manual_seed(0)
    acts = [torch.randn(n, 6, generator=gen) for n in (3, 5, 4, 2, 6)]
    toks = [[f"t{i}.{j}" for j in range(a.shape[0])] for i, a in enumerate(acts)]
    view = ti.viz.top_activations(toks, acts, k=3, neurons=[4, 1], unit_name="feature")
    for u, unit in enumerate([4, 1]):
        brute = sorted(range(len(acts)), key=lambda p: -max(float(x) for x in acts[p][:, unit]))[:3]
        assert view.data["order"][u] == brute
    props = as_json(view.panels[0].widget.props)
    assert props["firstDimensionLabels"] == ["feature 4", "feature 1"]
    first = view.data["order"][0][0]
    assert props["activations"][0][0][0] == acts[first][:, 4].double().tolist()
    assert props["tokens"][0][0][0] == toks[first]


def test_top_activations_tokens_layout_matches_circuitsvis_for_the_chosen_units() -> None:
    gen = torch.Generator().manual_seed(1)
    acts = [torch.randn(n, 5, generator=gen).double() for n in (4, 6)]
    toks = [[f"a{j}" for j in range(4)], [f"b{j}" for j in range(6)]]
    view = ti.viz.top_activations(toks, acts, k=3, neurons=[2, 0], layout="tokens")
    # circuitsvis's own topk_tokens on the same units laid out (unit, pos, 1)
    ref = circuitsvis_props(circuitsvis.topk_tokens, circuitsvis.topk_tokens.topk_tokens, toks,
                            [a[:, [2, 0]].T[:, :, None].numpy() for a in acts], max_k=3,
                            first_dimension_name="Neuron", third_dimension_name="activation",
                            first_dimension_labels=["neuron 2", "neuron 0"])
    assert as_json(ref["props"]) == as_json(view.panels[0].widget.props)


def test_top_activations_removes_padding_and_refuses_bad_units() -> None:
    acts = torch.arange(12.0).reshape(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    view = ti.viz.top_activations([["a", "b", "<pad>"], ["c", "d", "e"]], acts, attention_mask=mask, k=2)
    assert view.data["tokens"] == [["a", "b"], ["c", "d", "e"]]
    assert view.data["peaks"][0].tolist() == [2.0, 3.0]  # the pad row (4, 5) is not a peak
    with pytest.raises(SelectionError, match="neuron index 7 is out of range for 2 neurons"):
        ti.viz.top_activations([["a"]], [torch.ones(1, 2)], neurons=[7])
    with pytest.raises(OptionError, match="pass neurons="):
        ti.viz.top_activations([["a"]], [torch.ones(1, 101)])
    with pytest.raises(ShapeError, match="2 token lists for 1 prompts"):
        ti.viz.top_activations([["a"], ["b"]], [torch.ones(1, 2)])
    with pytest.raises(ShapeError, match="prompt 0 has 2 tokens but activations of shape"):
        ti.viz.top_activations([["a", "b"]], [torch.ones(3, 2)])


def test_predictions_equal_the_models_log_probs_and_circuitsvis_props(induction: Any) -> None:
    tokens = ti.models.zoo.repeated_tokens(1, 8, generator=torch.Generator().manual_seed(0))[0]
    iv = hooks.zero_ablate(site("z", 1), heads=[2])
    view = ti.viz.predictions(induction, tokens, intervention=iv, top_k=5)
    torch.testing.assert_close(view.data["log_probs"], induction(tokens[None])[0].double().log_softmax(-1))
    torch.testing.assert_close(view.data["log_probs_intervened"],
                               iv.run(induction, tokens[None])[0].double().log_softmax(-1))
    ref = circuitsvis_props(circuitsvis.logits, circuitsvis.logits.token_log_probs, tokens,
                            view.data["log_probs"], str, top_k=5)
    assert as_json(ref["props"]) == as_json(view.panels[0].widget.props)
    # the induction head (L1 H2) predicts the repeated half: ablating it costs nats there
    second_half = torch.arange(9, 16)
    def mean_true_logprob(lp: torch.Tensor) -> float:
        return float(lp[second_half, tokens[second_half + 1]].mean())
    assert mean_true_logprob(view.data["log_probs"]) - mean_true_logprob(view.data["log_probs_intervened"]) > 2.0


def test_predictions_count_is_top_k_as_in_the_lenses_and_its_old_name_k_warns(induction: Any) -> None:
    # top tokens per reading are top_k everywhere (lens, circuitsvis's token_log_probs); k is a ranking's count
    tokens = torch.tensor([5, 6, 7, 5, 6])
    today = ti.viz.predictions(induction, tokens, top_k=3)
    with pytest.warns(TlInterpDeprecationWarning, match=r"predictions\(k=...\) is now top_k="):
        old = ti.viz.predictions(induction, tokens, k=3)
    assert as_json(old.panels[0].widget.props) == as_json(today.panels[0].widget.props)
    assert len(today.panels[0].widget.props["topKTokens"][0]) == 3


def test_top_activations_refuses_more_prompts_or_tokens_than_there_are_and_shows_up_to_10_by_default() -> None:
    acts = [torch.arange(6.0).view(2, 3), torch.ones(1, 3), torch.zeros(4, 3)]
    toks = [["a", "b"], ["c"], ["d", "e", "f", "g"]]
    assert [len(o) for o in ti.viz.top_activations(toks, acts).data["order"]] == [3, 3, 3]  # all 3 prompts
    with pytest.raises(SelectionError, match=r"top_activations: k=4 is out of range: there are 3 prompts"):
        ti.viz.top_activations(toks, acts, k=4)
    # per prompt, up to k tokens: prompts differ in length, so k is checked against the longest
    view = ti.viz.top_activations(toks, acts, k=4, layout="tokens")
    assert [v.shape[1] for v in view.panels[0].widget.props["topkVals"]] == [2, 1, 4]
    with pytest.raises(SelectionError, match=r"k=5 is out of range: there are 4 tokens in the longest prompt"):
        ti.viz.top_activations(toks, acts, k=5, layout="tokens")


def test_predictions_refuse_bad_options_before_any_forward(induction: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    forward_forbidden(induction, monkeypatch)
    with pytest.raises(SelectionError, match=r"predictions: top_k=0 is out of range: there are 65 tokens \(d_vocab\); "
                                             r"choose 1 <= top_k <= 65"):
        ti.viz.predictions(induction, torch.tensor([0, 1]), top_k=0)
    with pytest.raises(SelectionError, match=r"predictions: top_k=66 is out of range: there are 65 tokens"):
        ti.viz.predictions(induction, torch.tensor([0, 1]), top_k=66)
    with pytest.raises(InputError, match="needs at least 2"):
        ti.viz.predictions(induction, torch.tensor([0]))


def test_views_render_offline_with_the_bundle_once_per_notebook(induction: Any, no_network: None) -> None:
    tokens = torch.tensor([0, 5, 6, 5, 6])
    views = [ti.viz.attention(induction, tokens, layer=1), ti.viz.predictions(induction, tokens),
             ti.viz.tokens(["a", "b"], [1.0, 2.0]), ti.viz.top_activations([["a", "b"]], [torch.ones(2, 3)])]
    ti.viz.reset_notebook()
    first, *rest = [v._repr_html_() for v in views]
    assert first.count(BUNDLE_MARKER) == 1 and all(BUNDLE_MARKER not in h for h in rest)
    assert all(len(h) < 100_000 for h in rest)
    for v in views:
        page = v.standalone_html()
        assert page.count(BUNDLE_MARKER) == 1 and "unpkg" not in page.replace(_circuitsvis.bundle_js(), "")
        assert not re.search(r"<script[^>]+src=", page)


def test_token_text_cannot_break_out_of_the_script() -> None:
    view = ti.viz.tokens(["</script><img src=x onerror=alert(1)>", "&"], [1.0, 2.0])
    fragment = view.html()
    assert "</script><img" not in fragment and "\\u003c/script\\u003e" in fragment


def test_notebook_views_carry_a_static_preview_and_reports_do_not(induction: Any) -> None:
    view = ti.viz.tokens(["The", " cat"], [0.5, -1.0])
    notebook = view._repr_html_()
    assert notebook.count('class="tl-cv-static"') == 1 and ">The</span>" in notebook and ">&#x27; cat" not in notebook
    assert "title='-1'" in notebook  # each token's value on hover, without JavaScript
    attention = ti.viz.attention(induction, torch.tensor([0, 5, 6]), layer=1, heads=[2])
    assert "L1H2 (rows: query positions)" in attention.html() and "<table" in attention.html()
    page = ti.viz.Report("r").view(view).view(attention).html()
    assert "tl-cv-static" not in page
