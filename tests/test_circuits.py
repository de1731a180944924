"""ti.circuits: the graph's names, edge scores against hand-hooked patching, batched
faithfulness against a circuit patched by hand, the induction circuit, errors before any run."""

from typing import Any

import pytest
import torch

import tl_interp as ti
from tl_interp.compat.tl import hooked_config_class
from tl_interp.errors import HookNameError, InputError, OptionError, UnsupportedError
from tests import _circuits_reference as ref
from tests.conftest import _cfg, attn_only, gpt2_style, hooked_model, llama_style, no_hooks_attached


def gemma_style() -> Any:
    """Gemma's extra norms after attention and MLP outputs, soft caps, GQA, rotary, RMSNorm."""
    return hooked_model(_cfg(act_fn="gelu", normalization_type="RMS", positional_embedding_type="rotary",
                             rotary_dim=8, gated_mlp=True, final_rms=True, n_key_value_heads=2,
                             use_normalization_before_and_after=True, attn_scores_soft_cap=20.0,
                             output_logits_soft_cap=5.0, original_architecture="Gemma2ForCausalLM")).eval()


FAMILIES = {"gpt2": gpt2_style, "llama_gqa_rotary_rms": llama_style, "attn_only": attn_only, "gemma": gemma_style}


def _pair(seed=0, rows=3, seq=6, vocab=61):
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(1, vocab, (rows, seq), generator=g)
    corrupted = clean.clone()
    corrupted[:, 2:4] = torch.randint(1, vocab, (rows, 2), generator=g)
    return clean, corrupted


METRIC = ti.metrics.logit_diff(3, 5)


def _per_prompt(logits):
    return logits[:, -1, 3] - logits[:, -1, 5]


# -- the graph ------------------------------------------------------------------------------
def test_graph_names_every_edge_as_mib_does_in_the_reference_matrix_order():
    g = ti.circuits.graph(hooked_model(_cfg(n_layers=2, n_heads=2)))
    assert g.nodes == ("input", "a0.h0", "a0.h1", "m0", "a1.h0", "a1.h1", "m1", "logits")
    assert g.edges[:6] == ("input->a0.h0<q>", "input->a0.h1<q>", "input->a0.h0<k>", "input->a0.h1<k>",
                           "input->a0.h0<v>", "input->a0.h1<v>")
    assert g.edges[6:9] == ("input->m0", "a0.h0->m0", "a0.h1->m0")
    assert g.edges[-7:] == tuple(f"{s}->logits" for s in g.nodes[:-1])
    assert "a0.h1->a1.h0<k>" in g.edges and "m1->a1.h0<q>" not in g.edges and "a1.h0->m1" in g.edges
    # per layer: 3 inputs x heads x senders before the layer + the MLP's senders; then the logits
    assert len(g.edges) == (3 * 2 * 1 + 3) + (3 * 2 * 4 + 6) + 7
    assert (g.sender("a0.h1->a1.h0<k>"), g.receiver("a0.h1->a1.h0<k>")) == ("a0.h1", "a1.h0")


def test_parallel_blocks_feed_the_mlp_from_the_block_input_and_attention_only_models_have_no_mlp_nodes():
    g = ti.circuits.graph(hooked_model(_cfg(parallel_attn_mlp=True)))
    assert "input->m0" in g.edges and "a0.h0->m0" not in g.edges and "a0.h0->m1" in g.edges
    g = ti.circuits.graph(attn_only())
    assert not any(n.startswith("m") for n in g.nodes) and "a0.h3->a1.h2<k>" in g.edges


def test_an_unknown_edge_name_is_refused_with_the_closest_names():
    g = ti.circuits.graph(gpt2_style())
    with pytest.raises(HookNameError, match=r"no edge 'a0.h1->a1.h2<K>'.*did you mean 'a0.h1->a1.h2<k>'"):
        g.index("a0.h1->a1.h2<K>")


@pytest.mark.parametrize("overrides, why", [
    (dict(original_architecture="Olmo2ForCausalLM"), "post-norm"),
])
def test_architectures_without_well_defined_edges_are_refused_before_any_forward_pass(overrides, why):
    model = hooked_model(_cfg(**overrides))
    clean, corrupted = _pair()
    with _no_forward(model), pytest.raises(UnsupportedError, match=f"not well defined.*{why}"):
        ti.circuits.attribute(model, clean, corrupted, METRIC, method="eap", progress=False)


class _ForwardRan(Exception):
    pass


class _no_forward:
    """A forward pass of the model raises (so a check that runs after one is caught)."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        def refuse(*args, **kwargs):
            raise _ForwardRan("a forward pass ran before the error")

        self.handle = self.model.register_forward_pre_hook(refuse)

    def __exit__(self, *exc):
        self.handle.remove()


@pytest.mark.parametrize("call, error, match", [
    (lambda m, c, k: ti.circuits.attribute(m, c, k, METRIC, method="eaq", progress=False), Exception, "method"),
    (lambda m, c, k: ti.circuits.attribute(m, c, k, lambda logits: logits.sum(), progress=False), InputError,
     "per-prompt values"),
    (lambda m, c, k: ti.circuits.attribute(m, c, k, ti.metrics.accuracy(3), method="eap", progress=False),
     InputError, "differentiate"),
    (lambda m, c, k: ti.circuits.attribute(m, c, k, METRIC, method="eap-ig-inputs", ablation="mean",
                                           progress=False), OptionError, "ablation='corrupted' only"),
    (lambda m, c, k: ti.circuits.attribute(m, c, k[:, :-1], METRIC, progress=False), Exception, "same shape"),
    (lambda m, c, k: ti.circuits.faithfulness(m, c, k, [["a0.h0->a1.h9<q>"]], METRIC, progress=False),
     HookNameError, "no edge 'a0.h0->a1.h9<q>'"),
])
def test_bad_inputs_fail_before_any_forward_pass(call, error, match):
    model = gpt2_style()
    clean, corrupted = _pair()
    with _no_forward(model), pytest.raises(error, match=match):
        call(model, clean, corrupted)


def test_a_study_restores_the_models_switches_and_leaves_no_hook_even_when_it_fails():
    model = llama_style()
    before = {k: getattr(model.cfg, k) for k in ("use_split_qkv_input", "use_attn_result", "use_hook_mlp_in",
                                                   "ungroup_grouped_query_attention")}
    clean, corrupted = _pair()
    ti.circuits.attribute(model, clean, corrupted, METRIC, method="eap", progress=False)
    bad = ti.metrics.logit_diff(3, torch.tensor([5, 5, 500]))  # an answer outside the vocabulary
    with pytest.raises(Exception):
        ti.circuits.attribute(model, clean, corrupted, bad, method="exact", progress=False)
    assert {k: getattr(model.cfg, k) for k in before} == before
    assert no_hooks_attached(model)


# -- scores against hand-hooked patching ----------------------------------------------------
@pytest.mark.parametrize("family", list(FAMILIES))
def test_exact_scores_equal_patching_each_edge_by_hand(family):
    model = FAMILIES[family]()
    clean, corrupted = _pair()
    scores = ti.circuits.attribute(model, clean, corrupted, METRIC, method="exact", progress=False)
    some = _some_edges(scores.names)  # every kind of sender and receiver; by hand, one forward each
    expected = ref.single_edges(model, clean, corrupted, _per_prompt, [scores.names[i] for i in some])
    torch.testing.assert_close(scores.per_prompt[:, some], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(scores.scores[some], expected.mean(0), atol=1e-5, rtol=0)


def test_exact_cells_recompute_one_heads_projection_and_fall_back_to_per_head_inputs_where_they_cannot():
    # shortformer models add positional embeddings to the normalised q/k inputs inside the block:
    # the cell then edits TL's per-head input instead, and says so
    for model, how in ((gpt2_style(), "projection of the receiving head"),
                       (hooked_model(_cfg(positional_embedding_type="shortformer")).eval(), "per-head inputs")):
        clean, corrupted = _pair()
        scores = ti.circuits.attribute(model, clean, corrupted, METRIC, method="exact", progress=False)
        assert how in scores.provenance.settings["head_cells"]
        some = _some_edges(scores.names, n=8)
        expected = ref.single_edges(model, clean, corrupted, _per_prompt, [scores.names[i] for i in some])
        torch.testing.assert_close(scores.per_prompt[:, some], expected, atol=1e-5, rtol=0)


def test_exact_scores_of_a_sample_of_edges_equal_those_edges_in_the_full_run():
    # the benchmark's per-layer samples (exact_effects(only=...)) compute only the sampled senders
    from tl_interp.circuits._edit import sender_deltas
    from tl_interp.circuits._runs import ablated_values, prepare, sender_values
    from tl_interp.circuits._exact import exact_effects
    from tl_interp import compat

    model = llama_style()
    clean, corrupted = _pair()
    full = ti.circuits.attribute(model, clean, corrupted, METRIC, method="exact", progress=False).per_prompt
    g = ti.circuits.graph(model)
    _, clean_b, corrupt_b = prepare(model, clean, corrupted, METRIC, "corrupted", differentiable=False)
    clean_s, _ = sender_values(model, g, clean_b)
    diff = sender_deltas(g, compat.attention_output_norms(model), clean_s,
                         ablated_values(model, g, "corrupted", clean_b, corrupt_b, clean_s))
    only = sorted(torch.randperm(len(g.edges), generator=torch.Generator().manual_seed(1))[:40].tolist())
    sample, _ = exact_effects(model, g, clean_b, METRIC, diff, 1024.0, None, False, only=set(only))
    torch.testing.assert_close(sample, full[:, only], atol=1e-6, rtol=0)


def _some_edges(names, n=24):
    """Indices of ``n`` edges drawn at random, plus the first edge into every kind of receiver
    input (q, k, v, MLP, logits) from every kind of sender (input, head, MLP)."""
    kinds = {}
    for i, name in enumerate(names):
        sender, receiver = name.split("->")
        key = (sender[0], receiver[0] if "<" not in receiver else receiver[-2], receiver.split(".")[0])
        kinds.setdefault(key, i)
    drawn = torch.randperm(len(names), generator=torch.Generator().manual_seed(0))[:n].tolist()
    return sorted(set(kinds.values()) | set(drawn))


def test_exact_scores_on_a_padded_batch_of_unequal_lengths_equal_each_prompt_patched_alone():
    model = llama_style()
    clean, corrupted = _pair(rows=2, seq=7)
    mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2])
    metric = ti.metrics.logit_diff(3, 5)
    scores = ti.circuits.attribute(model, clean, corrupted, metric, method="exact", progress=False)
    padded = ti.circuits.attribute(model, ti.models.Tokenized(clean, mask, torch.tensor([6, 4]),
                                                              [["x"] * 7] * 2),
                                   ti.models.Tokenized(corrupted, mask, torch.tensor([6, 4]), [["x"] * 7] * 2),
                                   metric, method="exact", progress=False)
    short = ti.circuits.attribute(model, clean[1:, :5], corrupted[1:, :5], metric, method="exact", progress=False)
    torch.testing.assert_close(padded.per_prompt[0], scores.per_prompt[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(padded.per_prompt[1], short.per_prompt[0], atol=1e-5, rtol=0)
    eap = ti.circuits.attribute(model, ti.models.Tokenized(clean, mask, torch.tensor([6, 4]), [["x"] * 7] * 2),
                                ti.models.Tokenized(corrupted, mask, torch.tensor([6, 4]), [["x"] * 7] * 2),
                                metric, method="eap", progress=False)
    eap_short = ti.circuits.attribute(model, clean[1:, :5], corrupted[1:, :5], metric, method="eap", progress=False)
    torch.testing.assert_close(eap.per_prompt[1], eap_short.per_prompt[0], atol=1e-5, rtol=0)


def _ungrouped_copy(model):
    """The same model with its key / value weights copied per query head (no GQA)."""
    cfg = dict(model.cfg.to_dict())
    repeats = model.cfg.n_heads // model.cfg.n_key_value_heads
    cfg["n_key_value_heads"] = None
    copy = hooked_model(hooked_config_class()(**cfg)).eval()
    state = {}
    for name, value in model.state_dict().items():
        if any(name.endswith(k) for k in ("_W_K", "_W_V", "_b_K", "_b_V")):
            name = name.replace("._", ".")
            value = torch.repeat_interleave(value, repeats, dim=0)
        state[name] = value
    copy.load_state_dict(state, strict=False)
    return copy


@pytest.mark.parametrize("method", ["eap", "eap-ig-inputs", "exact"])
def test_grouped_query_attention_scores_equal_the_same_model_with_its_key_value_weights_copied(method):
    model = llama_style()
    copy = _ungrouped_copy(model)
    clean, corrupted = _pair()
    torch.testing.assert_close(copy(clean), model(clean), atol=1e-5, rtol=0)
    grouped = ti.circuits.attribute(model, clean, corrupted, METRIC, method=method, progress=False)
    ungrouped = ti.circuits.attribute(copy, clean, corrupted, METRIC, method=method, progress=False)
    assert grouped.names == ungrouped.names
    torch.testing.assert_close(grouped.per_prompt, ungrouped.per_prompt, atol=1e-5, rtol=1e-4)


def test_eap_and_eap_ig_equal_the_exact_effect_on_a_model_linear_in_its_edges():
    # no norms, attention scores zeroed (uniform attention), no MLP: the metric is linear in every
    # receiver input, so a first-order estimate is exact and must agree with patching. (Not
    # eap-ig-activations: as the reference defines it, its runs hold one node's output fixed, which
    # cuts the gradient into that node's inputs in those runs.)
    model = hooked_model(_cfg(attn_only=True, d_mlp=None, act_fn=None, normalization_type=None)).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.attn.W_Q.zero_()
    clean, corrupted = _pair()
    exact = ti.circuits.attribute(model, clean, corrupted, METRIC, method="exact", progress=False).per_prompt
    for method in ("eap", "eap-ig-inputs"):
        got = ti.circuits.attribute(model, clean, corrupted, METRIC, method=method, progress=False).per_prompt
        torch.testing.assert_close(got, exact, atol=1e-4, rtol=1e-4)


def test_eap_ig_approaches_the_exact_single_edge_effect_as_steps_grow_and_the_model_nears_linearity():
    # attention scores scaled by 1, 0.3, 0.1: the softmax is the only non-linearity left, and it
    # flattens as the scale shrinks
    clean, corrupted = _pair()
    final = []
    for scale in (1.0, 0.3, 0.1):
        model = hooked_model(_cfg(attn_only=True, d_mlp=None, act_fn=None, normalization_type=None)).eval()
        with torch.no_grad():
            for block in model.blocks:
                block.attn.W_Q.mul_(scale)
        exact = ti.circuits.attribute(model, clean, corrupted, METRIC, method="exact", progress=False).scores
        errors = []
        for steps in (1, 4, 16, 64):
            ig = ti.circuits.attribute(model, clean, corrupted, METRIC, method="eap-ig-inputs", steps=steps,
                                       progress=False).scores
            errors.append(float((ig - exact).abs().max() / exact.abs().max()))
        assert errors == sorted(errors, reverse=True), (scale, errors)  # more steps, closer
        final.append(errors[-1])
    assert final == sorted(final, reverse=True) and final[-1] < 1e-3, final  # more linear, closer


# -- batched faithfulness against a circuit patched by hand ---------------------------------
def _circuits(g, seed=0):
    gen = torch.Generator().manual_seed(seed)
    edges = list(g.edges)
    out = [edges, [], [e for e in edges if e.endswith("logits")]]
    for frac in (0.1, 0.5, 0.9):
        keep = torch.rand(len(edges), generator=gen) < frac
        out.append([e for e, k in zip(edges, keep.tolist()) if k])
    return out


@pytest.mark.parametrize("family", list(FAMILIES))
def test_batched_faithfulness_equals_every_edge_outside_the_circuit_patched_by_hand(family):
    model = FAMILIES[family]()
    clean, corrupted = _pair()
    circuits = _circuits(ti.circuits.graph(model))
    f = ti.circuits.faithfulness(model, clean, corrupted, circuits, METRIC, progress=False)
    with ref.flags(model), torch.no_grad():
        _, cache = model.run_with_cache(corrupted)
    edges = ti.circuits.graph(model).edges
    expected = torch.stack([ref.circuit_values(model, clean, cache, _per_prompt, edges, c) for c in circuits])
    torch.testing.assert_close(f.values, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(f.clean, _per_prompt(model(clean)).detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(f.corrupted, _per_prompt(model(corrupted)).detach(), atol=1e-5, rtol=0)
    assert f.normalized[0] == pytest.approx(1.0, abs=1e-6) and f.normalized[1] == pytest.approx(0.0, abs=1e-5)
    assert f.provenance.settings["passes"] < len(circuits)  # many circuits per stacked pass


@pytest.mark.parametrize("ablation", ["mean", "zero"])
def test_mean_and_zero_ablated_faithfulness_equal_the_hand_patched_circuit(ablation):
    model = gpt2_style()
    clean, corrupted = _pair()
    g = ti.circuits.graph(model)
    circuits = _circuits(g)[2:]
    f = ti.circuits.faithfulness(model, clean, corrupted, circuits, METRIC, ablation=ablation, progress=False)
    with ref.flags(model), torch.no_grad():
        _, cache = model.run_with_cache(corrupted)
    value = ((lambda s: ref.sender_out(model, cache, s).mean((0, 1)).expand(*clean.shape, -1)) if ablation == "mean"
             else (lambda s: torch.zeros(*clean.shape, model.cfg.d_model)))
    expected = torch.stack([ref.circuit_values(model, clean, None, _per_prompt, g.edges, c, other=value)
                            for c in circuits])
    torch.testing.assert_close(f.values, expected, atol=1e-5, rtol=0)


def test_results_save_and_load_exactly(tmp_path):
    model = gpt2_style()
    clean, corrupted = _pair()
    s = ti.circuits.attribute(model, clean, corrupted, METRIC, method="eap", progress=False)
    back = ti.results.Result.load(s.save(tmp_path / "s.safetensors"))
    assert type(back) is ti.circuits.EdgeScores and back.names == s.names and back.graph == s.graph
    torch.testing.assert_close(back.per_prompt, s.per_prompt)
    assert back.top(3) == s.top(3) and "eap edge scores" in back.summary() and "EdgeScores(eap" in repr(back)
    f = ti.circuits.faithfulness(model, clean, corrupted, _circuits(s.graph)[:3], METRIC, progress=False)
    back = ti.results.Result.load(f.save(tmp_path / "f.safetensors"))
    torch.testing.assert_close(back.normalized, f.normalized)
    assert "<table" in back._repr_html_()


# -- the induction circuit -----------------------------------------------------------------
def test_induction_2l_top_edges_include_a_previous_token_head_feeding_the_induction_heads_key():
    from tl_interp.models.zoo import induction

    model = ti.models.load("induction-2l")
    gen = torch.Generator().manual_seed(7)
    seq = induction.repeated_tokens(16, 10, generator=gen)[:, :17]  # BOS, r (10), r[:6]: last token r[5]
    answers = seq[:, 7]  # induction predicts r[6]
    corrupted = seq.clone()
    corrupted[:, 1:11] = torch.randint(1, induction.N_RANDOM_TOKENS + 1, (16, 10), generator=gen)
    metric = ti.metrics.answer_logprob(answers)
    scores = ti.circuits.attribute(model, seq, corrupted, metric, method="eap-ig-inputs", progress=False)
    top = [name for name, _ in scores.top(8)]
    assert any(e in top for e in ("a0.h0->a1.h2<k>", "a0.h1->a1.h2<k>", "a0.h2->a1.h2<k>")), top
    g = scores.graph
    circuit = [name for name, _ in scores.top(20)]
    f = ti.circuits.faithfulness(model, seq, corrupted, [g.edges, [], circuit], metric, progress=False)
    assert f.normalized[0] == pytest.approx(1.0, abs=1e-6) and f.normalized[1] == pytest.approx(0.0, abs=1e-4)
    assert f.normalized[2] > 0.5  # 20 of the graph's edges recover most of the behaviour
