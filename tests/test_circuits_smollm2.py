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
