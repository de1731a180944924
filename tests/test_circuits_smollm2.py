"""ti.circuits on SmolLM2-135M (grouped-query attention, rotary, RMSNorm, 30 layers): the months
task (" April" after three months) against a corrupted order. Marked ``real_model``."""

import pytest
import torch

import tl_interp as ti

pytestmark = pytest.mark.real_model

CLEAN = ["January, February, March,", "June, July, August,"]
CORRUPTED = ["March, January, February,", "August, June, July,"]


@pytest.fixture(scope="module")
def model():
    return ti.models.load("smollm2-135m")


def _ids(model, words):
    ids = [model.to_tokens(w, prepend_bos=False)[0] for w in words]
    assert all(len(i) == 1 for i in ids), ids
    return torch.cat(ids)


def test_eap_and_faithfulness_on_smollm2_months(model):
    metric = ti.metrics.logit_diff(_ids(model, [" April", " September"]), _ids(model, [" February", " July"]))
    switches = {k: getattr(model.cfg, k) for k in ("use_split_qkv_input", "use_attn_result", "use_hook_mlp_in",
                                                     "ungroup_grouped_query_attention")}
    scores = ti.circuits.attribute(model, CLEAN, CORRUPTED, metric, method="eap", progress=False)
    assert {k: getattr(model.cfg, k) for k in switches} == switches
    assert torch.isfinite(scores.per_prompt).all() and len(scores.names) == len(ti.circuits.graph(model).edges)
    top = [name for name, _ in scores.top(300)]
    f = ti.circuits.faithfulness(model, CLEAN, CORRUPTED, [scores.names, [], top], metric, progress=False)
    batch = ti.models.adapt(model).tokenize(CORRUPTED)
    with torch.no_grad():
        corrupted = metric.at(batch).per_prompt(model(batch.tokens, attention_mask=batch.attention_mask))
    torch.testing.assert_close(f.values[0], f.clean, atol=1e-4, rtol=0)  # 30 layers of float32 rounding
    torch.testing.assert_close(f.corrupted, corrupted, atol=1e-3, rtol=0)
    assert f.normalized[0] == pytest.approx(1.0, abs=1e-4)
    assert float(f.normalized[2]) == float(f.normalized[2])  # a number (what it is, the demo reports)


def exact_of_some_edges(model, clean, corrupted, metric, some):
    """``(n_prompts, len(some))`` exact scores of the edges ``some`` (indices into the graph's edges)
    alone, the study's statistics and the clean batch, by the study ``attribute(method="exact")``
    runs (``exact_study``: the senders read in the engine's base run, the corrupted prompts riding
    alongside): a real model's graph is too large to score whole here."""
    from tl_interp.circuits._exact import exact_study
    from tl_interp.circuits._runs import prepare

    g = ti.circuits.graph(model)
    _, clean_b, corrupt_b = prepare(model, clean, corrupted, metric, "corrupted", differentiable=False)
    values, stats, _ = exact_study(model, g, clean_b, corrupt_b, metric, "corrupted", 1024.0, None, False,
                                   only=set(some))
    assert stats["senders_read"].endswith("in the engine's base run (one forward pass)"), stats["senders_read"]
    return values, stats, clean_b


def test_exact_last_layer_key_value_edges_on_smollm2_equal_the_hand_loop(model):
    # grouped-query attention kept grouped, the final residual written at the last position by
    # hand (no block runs), logits read at the metric's two answers only: a sample of edges into
    # layer 29's keys and values
    from tests import _circuits_reference as ref

    metric = ti.metrics.logit_diff(_ids(model, [" April", " September"]), _ids(model, [" February", " July"]))
    clean, corrupted = model.to_tokens(CLEAN), model.to_tokens(CORRUPTED)
    g = ti.circuits.graph(model)
    last = [i for i, name in enumerate(g.edges) if name.split("->")[1].startswith("a29.") and name[-3:] in ("<k>", "<v>")]
    some = [last[k] for k in torch.randperm(len(last), generator=torch.Generator().manual_seed(0))[:6].tolist()]
    some = sorted(some + [i for i, name in enumerate(g.edges) if name == "input->a29.h0<k>"])
    values, stats, clean_b = exact_of_some_edges(model, clean, corrupted, metric, some)
    assert stats["receiving_cells"] == len(some) and "engine_grouped" not in stats
    assert stats["engine"]["head_columns"].startswith("on")
    per_prompt = lambda logits: metric.per_prompt(logits, clean_b)  # noqa: E731
    expected = ref.single_edges(model, clean, corrupted, per_prompt, [g.edges[i] for i in some])
    torch.testing.assert_close(values, expected, atol=1e-4, rtol=0)  # 30 layers of float32 rounding
    assert expected.abs().max() > 1e-3  # the sampled edges move the metric
