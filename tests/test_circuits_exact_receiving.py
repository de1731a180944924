"""Exact single edges into layers below the last, computed at the receiving layer alone
(``circuits._receiving``): equal to patching each edge by hand with hooks, on plain, rotary,
grouped-query and attention-only models, per position too; the study says it took that path,
and where a head's attention is not the plain computation it falls back and says why."""

import pytest
import torch

import tl_interp as ti
from tests import _circuits_reference as ref
from tests.conftest import _cfg, hooked_model
from tests.test_circuits_exact_paths import rotary_mha
from tests.test_circuits_positions import _edge_at_position_by_hand
from tl_interp.circuits._graph import at_position

METRIC = ti.metrics.logit_diff(3, 5)


def _per_prompt(logits):
    return logits[:, -1, 3] - logits[:, -1, 5]


def _pair(seed=0, rows=3, seq=7, vocab=61, first=1):
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(1, vocab, (rows, seq), generator=g)
    corrupted = clean.clone()
    corrupted[:, first:] = torch.randint(1, vocab, (rows, seq - first), generator=g)
    return clean, corrupted


def _below_last(names, n_layers):
    """Indices of edges into heads and MLPs of layers below the last."""
    last = n_layers - 1
    out = []
    for i, name in enumerate(names):
        receiver = name.split("->")[1]
        if receiver != "logits" and int(receiver[1:].split(".")[0]) < last:
            out.append(i)
    return out


FAMILIES = {
    "gpt2": lambda: hooked_model(_cfg(n_layers=3)).eval(),
    "rotary_rms_gated": lambda: rotary_mha(),
    "llama_gqa": lambda: hooked_model(_cfg(n_layers=3, act_fn="silu", normalization_type="RMS",
                                           positional_embedding_type="rotary", rotary_dim=8, gated_mlp=True,
                                           final_rms=True, n_key_value_heads=2)).eval(),
    "attn_only": lambda: hooked_model(_cfg(n_layers=3, attn_only=True, d_mlp=None, act_fn=None)).eval(),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_edge_equals_the_hand_loop_and_is_computed_at_its_receiving_layer(family):
    # below the last layer as the next layer's input; the last layer's and the logits' edges as
    # the final residual at the position the metric reads
    model = FAMILIES[family]()
    clean, corrupted = _pair()
    scores = ti.circuits.attribute(model, clean, corrupted, METRIC, method="exact", progress=False)
    settings = scores.provenance.settings
    assert settings["receiving_layer"].startswith("on") and "the last layer's" in settings["receiving_layer"]
    assert settings["receiving_cells"] == len(scores.names) and settings["final_kv_split"] == 0
    expected = ref.single_edges(model, clean, corrupted, _per_prompt, scores.names)
    torch.testing.assert_close(scores.per_prompt, expected, atol=1e-5, rtol=0)
    last = [i for i in range(len(scores.names)) if i not in _below_last(scores.names, model.cfg.n_layers)]
    assert expected[:, last].abs().max() > 1e-3  # the last layer's edges move the metric: the comparison can fail
    assert expected.abs().max() > 1e-3


def test_a_metric_that_reads_one_position_before_the_last_gets_the_last_layers_edges_written_there():
    # the final residual written at position 4 of 7 (the engine runs the final block from there: no split)
    model = FAMILIES["rotary_rms_gated"]()
    clean, corrupted = _pair()
    metric = ti.metrics.logit_diff(3, 5, positions=4)
    scores = ti.circuits.attribute(model, clean, corrupted, metric, method="exact", progress=False)
    assert scores.provenance.settings["receiving_cells"] == len(scores.names)

    def per_prompt(logits):
        return logits[:, 4, 3] - logits[:, 4, 5]

    some = [i for i in range(len(scores.names)) if i not in _below_last(scores.names, model.cfg.n_layers)][::3]
    expected = ref.single_edges(model, clean, corrupted, per_prompt, [scores.names[i] for i in some])
    torch.testing.assert_close(scores.per_prompt[:, some], expected, atol=1e-5, rtol=0)
    assert expected.abs().max() > 1e-3


def test_a_metric_that_reads_positions_that_differ_by_row_keeps_the_last_layer_on_the_ordinary_forward():
    # the final residual is written at one position, the same in every row; otherwise the last
    # layer's head edges edit the heads' projections (ungrouped keys/values), and all equal the hand loop
    model = FAMILIES["llama_gqa"]()
    clean, corrupted = _pair()
    metric = ti.metrics.logit_diff(3, 5, positions=torch.tensor([6, 4, 6]))
    scores = ti.circuits.attribute(model, clean, corrupted, metric, method="exact", progress=False)
    settings = scores.provenance.settings
    assert settings["receiving_layer"].endswith("below the last layer") and "engine_grouped" in settings
    rows = torch.arange(3)

    def per_prompt(logits):
        return logits[rows, [6, 4, 6], 3] - logits[rows, [6, 4, 6], 5]

    some = list(range(0, len(scores.names), 5))
    expected = ref.single_edges(model, clean, corrupted, per_prompt, [scores.names[i] for i in some])
    torch.testing.assert_close(scores.per_prompt[:, some], expected, atol=1e-5, rtol=0)


def test_grouped_query_models_run_every_edge_with_grouped_keys_and_a_cached_prefix_in_one_study():
    # no ungrouped K/V for any pass: TL's key-value cache serves them (prefix_kv), one base run
    model = FAMILIES["llama_gqa"]()
    clean, corrupted = _pair(first=3)
    scores = ti.circuits.attribute(model, clean, corrupted, METRIC, method="exact", progress=False)
    settings = scores.provenance.settings
    assert settings["engine"]["prefix_kv"] == "on" and settings["prefix_passes"] > 0
    assert "engine_grouped" not in settings
    some = list(range(0, len(scores.names), 7))
    expected = ref.single_edges(model, clean, corrupted, _per_prompt, [scores.names[i] for i in some])
    torch.testing.assert_close(scores.per_prompt[:, some], expected, atol=1e-5, rtol=0)


def test_per_position_edges_at_the_receiving_layer_equal_patching_one_position_by_hand():
    model = FAMILIES["llama_gqa"]()
    clean, corrupted = _pair(seq=5)
    scores = ti.circuits.attribute(model, clean, corrupted, METRIC, method="exact", per_position=True,
                                   progress=False)
    assert scores.provenance.settings["receiving_cells"] > 0
    plain = ti.circuits.graph(model).edges
    for e in range(0, len(plain), 6):  # below the last layer, in it, and into the logits
        for p in (1, 3, 4):
            index = scores.names.index(at_position(plain[e], p))
            expected = _edge_at_position_by_hand(model, clean, corrupted, plain[e], p)
            torch.testing.assert_close(scores.per_prompt[:, index], expected, atol=1e-5, rtol=0,
                                       msg=f"{plain[e]} at {p}")


@pytest.mark.parametrize("overrides, why", [
    ({"attn_scores_soft_cap": 5.0}, "soft-capped"),
    ({"use_normalization_before_and_after": True, "normalization_type": "RMS"}, "use_normalization_before_and_after"),
])
def test_where_a_heads_attention_is_not_plain_the_receiving_layer_is_off_says_why_and_values_still_match(
        overrides, why):
    model = hooked_model(_cfg(n_layers=3, **overrides)).eval()
    clean, corrupted = _pair()
    scores = ti.circuits.attribute(model, clean, corrupted, METRIC, method="exact", progress=False)
    settings = scores.provenance.settings
    assert settings["receiving_layer"].startswith("off") and why in settings["receiving_layer"]
    assert settings["receiving_cells"] == 0
    some = _below_last(scores.names, model.cfg.n_layers)[::4]
    expected = ref.single_edges(model, clean, corrupted, _per_prompt, [scores.names[i] for i in some])
    torch.testing.assert_close(scores.per_prompt[:, some], expected, atol=1e-5, rtol=0)


@pytest.mark.real_model
def test_smollm2_edges_equal_the_hand_loop_at_their_receiving_layer():
    # SmolLM2-135M: grouped-query attention kept grouped, rotary, RMSNorm, gated MLPs; q/k/v/MLP
    # edges into an early, a middle, the second-to-last and the last layer, and into the logits
    from tests.test_circuits_smollm2 import CLEAN, CORRUPTED, _ids
    from tl_interp.circuits._exact import corrupted_deltas, exact_effects

    model = ti.models.load("smollm2-135m")
    metric = ti.metrics.logit_diff(_ids(model, [" April", " September"]), _ids(model, [" February", " July"]))
    clean, corrupted = model.to_tokens(CLEAN), model.to_tokens(CORRUPTED)
    g, clean_b, diff, streams = corrupted_deltas(model, clean, corrupted, metric)
    gen = torch.Generator().manual_seed(0)
    some: list[int] = []
    some.append(len(g.edges) - 1 - int(torch.randint(len(g.senders), (1,), generator=gen)))  # into the logits
    for layer in (0, 14, 28, 29):
        for kind in ("<q>", "<k>", "<v>", f"->m{layer}"):
            pool = [i for i, name in enumerate(g.edges) if name.endswith(kind) and
                    (kind.startswith("->") or name.split("->")[1].startswith(f"a{layer}."))]
            some.append(pool[int(torch.randint(len(pool), (1,), generator=gen))])
    values, stats = exact_effects(model, g, clean_b, metric, diff, 1024.0, None, False, only=set(some),
                                  streams=streams)
    assert stats["receiving_cells"] == len(some) and stats["engine"]["prefix_kv"] == "on"
    per_prompt = lambda logits: metric.per_prompt(logits, clean_b)  # noqa: E731
    expected = ref.single_edges(model, clean, corrupted, per_prompt, [g.edges[i] for i in sorted(some)])
    torch.testing.assert_close(values, expected, atol=1e-4, rtol=0)  # 30 layers of float32 rounding
    assert expected.abs().max() > 1e-3


def test_half_precision_models_do_not_take_the_receiving_layer_and_say_why():
    # TL computes half-precision attention scores in float32; the hand attention would not match it
    model = hooked_model(_cfg(n_layers=2)).eval()
    assert ti.compat.attention.head_attention_reason(model) is None
    model = hooked_model(_cfg(n_layers=2, dtype=torch.bfloat16)).eval()
    assert "bfloat16" in ti.compat.attention.head_attention_reason(model)
