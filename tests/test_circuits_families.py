"""Every model family the toolkit loads either works with ti.circuits, exactly, or is refused with a
typed error before any forward pass: the zoo models, Gemma-3's config features (q/k norms, local
windows, one key/value head, norms after attention and MLP outputs), parallel attention + MLP
blocks; post-norm blocks and models without per-head hooks are refused, naming why."""

import copy
from typing import Any

import pytest
import torch

import tl_interp as ti
from tests import _circuits_reference as ref
from tests.circuits_reference import brute_force_faithfulness
from tests.conftest import _cfg, hooked_model, llama_style, sae_transformer
from tests.test_circuits import METRIC, _circuits, _no_forward, _pair, _per_prompt, _some_edges, _ungrouped_copy
from tl_interp.errors import UnsupportedError


def gemma3_style() -> Any:
    """Gemma-3-270M's config features at toy size: q/k RMS norms, local (windowed) and global
    layers with their own rotary bases, a single key/value head, norms before and after."""
    return hooked_model(_cfg(act_fn="gelu_pytorch_tanh", normalization_type="RMS", positional_embedding_type="rotary",
                             rotary_dim=8, rotary_base_local=10000, gated_mlp=True, final_rms=True, n_key_value_heads=1,
                             use_normalization_before_and_after=True, use_qk_norm=True, window_size=3,
                             use_local_attn=True, attn_types=["local", "global"],
                             original_architecture="Gemma3ForCausalLM")).eval()


def parallel_neox_style() -> Any:
    """GPT-NeoX / GPT-J style: attention and MLP read the same block input; partial rotary."""
    return hooked_model(_cfg(parallel_attn_mlp=True, positional_embedding_type="rotary", rotary_dim=4,
                             original_architecture="GPTNeoXForCausalLM")).eval()


def parallel_gqa_rms() -> Any:
    return hooked_model(_cfg(parallel_attn_mlp=True, act_fn="silu", normalization_type="RMS",
                             positional_embedding_type="rotary", rotary_dim=8, n_key_value_heads=2,
                             gated_mlp=True)).eval()


FAMILIES = {"gemma3": gemma3_style, "parallel_neox": parallel_neox_style, "parallel_gqa_rms": parallel_gqa_rms,
            "hooked_sae_transformer": sae_transformer}


def test_the_gemma3_toy_uses_the_features_it_stands_for():
    # a window shorter than the prompts, so the local layer really attends differently from a global one
    model = gemma3_style()
    clean, _ = _pair()
    assert model.cfg.window_size < clean.shape[1] and model.cfg.use_qk_norm and model.cfg.n_key_value_heads == 1
    wide = hooked_model(_cfg(**{**model.cfg.to_dict(), "window_size": 64})).eval()
    wide.load_state_dict(model.state_dict())
    assert not torch.allclose(wide(clean), model(clean), atol=1e-4)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_exact_scores_and_faithfulness_equal_the_hand_loops_on_more_families(family):
    model = FAMILIES[family]()
    clean, corrupted = _pair()
    scores = ti.circuits.attribute(model, clean, corrupted, METRIC, method="exact", progress=False)
    some = _some_edges(scores.names, n=16)
    expected = ref.single_edges(model, clean, corrupted, _per_prompt, [scores.names[i] for i in some])
    torch.testing.assert_close(scores.per_prompt[:, some], expected, atol=1e-5, rtol=0)
    g = ti.circuits.graph(model)
    circuits = _circuits(g)
    f = ti.circuits.faithfulness(model, clean, corrupted, circuits, METRIC, progress=False)
    with ref.flags(model), torch.no_grad():
        _, cache = model.run_with_cache(corrupted)
    by_hand = torch.stack([ref.circuit_values(model, clean, cache, _per_prompt, g.edges, c) for c in circuits])
    torch.testing.assert_close(f.values, by_hand, atol=1e-5, rtol=0)
    # independent of the graph's edge list: the full circuit is the clean run, the empty one the corrupted run
    with torch.no_grad():
        torch.testing.assert_close(f.values[0], _per_prompt(model(clean)), atol=1e-5, rtol=0)
        torch.testing.assert_close(f.values[1], _per_prompt(model(corrupted)), atol=1e-5, rtol=0)
    eap = ti.circuits.attribute(model, clean, corrupted, METRIC, method="eap", progress=False)
    assert bool(torch.isfinite(eap.per_prompt).all()) and float(eap.scores.detach().abs().max()) > 0


MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")


def _zoo_task(name: str) -> tuple[Any, Any, Any, Any, Any]:
    """(model, clean, corrupted, metric, per-prompt score) of each zoo model's own task: induction
    on repeated random tokens; months continuation, corrupted to start six months later."""
    model = ti.models.load(name)
    if name == "induction-2l":
        g = torch.Generator().manual_seed(3)
        r, s = torch.randint(1, 65, (4, 6), generator=g), torch.randint(1, 65, (4, 6), generator=g)
        bos = torch.zeros(4, 1, dtype=torch.long)
        clean, corrupted = torch.cat([bos, r, r[:, :-1]], 1), torch.cat([bos, s, r[:, :-1]], 1)
        correct, wrong = r[:, -1], s[:, -1]
    else:
        def prompt(i):
            return " , ".join(MONTHS[(i + k) % 12] for k in range(3)) + " ,"

        clean, corrupted = model.to_tokens([prompt(i) for i in range(4)]), model.to_tokens([prompt(i + 6) for i in range(4)])
        correct = torch.tensor([model.to_single_token(MONTHS[(i + 3) % 12]) for i in range(4)])
        wrong = torch.tensor([model.to_single_token(MONTHS[(i + 9) % 12]) for i in range(4)])
    rows = torch.arange(4)
    return (model, clean, corrupted, ti.metrics.logit_diff(correct, wrong),
            lambda logits: logits[rows, -1, correct] - logits[rows, -1, wrong])


@pytest.mark.parametrize("name, n_edges", [("induction-2l", None), ("ordinal-4l", 40)])
def test_exact_scores_on_the_zoo_models_equal_patching_each_edge_by_hand(name, n_edges):
    model, clean, corrupted, metric, score = _zoo_task(name)
    scores = ti.circuits.attribute(model, clean, corrupted, metric, method="exact", progress=False)
    some = list(range(len(scores.names))) if n_edges is None else _some_edges(scores.names, n=n_edges)
    expected = ref.single_edges(model, clean, corrupted, score, [scores.names[i] for i in some])
    # 1e-5, plus float32 rounding of effects as large as the logit difference itself (~4) ...
    torch.testing.assert_close(scores.per_prompt[:, some], expected, atol=1e-5, rtol=1e-5)
    assert float(expected.abs().max()) > 0.5  # the task's edges matter: the comparison is not of near-zeros
    # ... which is all it is: in float64 both agree to the float32 the scores are stored in
    wide = copy.deepcopy(model).to(torch.float64)
    scores = ti.circuits.attribute(wide, clean, corrupted, metric, method="exact", progress=False)
    expected = ref.single_edges(wide, clean, corrupted, score, [scores.names[i] for i in some])
    torch.testing.assert_close(scores.per_prompt[:, some].double(), expected, atol=1e-6, rtol=0)


def test_batched_faithfulness_on_ordinal_4l_equals_the_brute_force_loop():
    model, clean, corrupted, metric, score = _zoo_task("ordinal-4l")
    g = ti.circuits.graph(model)
    circuits = [tuple(c) for c in _circuits(g, seed=2)]
    f = ti.circuits.faithfulness(model, clean, corrupted, circuits, metric, progress=False)
    torch.testing.assert_close(f.values, brute_force_faithfulness(model, clean, corrupted, circuits, score),
                               atol=1e-5, rtol=0)
    assert float((f.clean - f.corrupted).abs().min()) > 1  # the corruption changes the answer on every prompt


def test_grouped_query_faithfulness_and_eap_ig_activations_equal_the_model_with_copied_key_value_weights():
    model = llama_style()
    copy = _ungrouped_copy(model)
    clean, corrupted = _pair()
    grouped = ti.circuits.attribute(model, clean, corrupted, METRIC, method="eap-ig-activations", progress=False)
    ungrouped = ti.circuits.attribute(copy, clean, corrupted, METRIC, method="eap-ig-activations", progress=False)
    torch.testing.assert_close(grouped.per_prompt, ungrouped.per_prompt, atol=1e-5, rtol=1e-4)
    circuits = _circuits(ti.circuits.graph(model))
    torch.testing.assert_close(ti.circuits.faithfulness(model, clean, corrupted, circuits, METRIC, progress=False).values,
                               ti.circuits.faithfulness(copy, clean, corrupted, circuits, METRIC, progress=False).values,
                               atol=1e-5, rtol=0)


def _post_norm() -> Any:
    return hooked_model(_cfg(original_architecture="Olmo2ForCausalLM")).eval()


@pytest.mark.parametrize("study", ["graph", "eap", "exact", "faithfulness", "faithfulness_curve"])
@pytest.mark.parametrize("make, why", [
    (_post_norm, "post-norm: each sublayer's output is normalised before it is added"),
    (lambda: ti.models.load("s5-mlp"), "need a HookedTransformer .*got S5MLP"),
])
def test_models_without_well_defined_edges_are_refused_by_every_study_before_any_forward_pass(study, make, why):
    model = make()
    clean, corrupted = _pair(vocab=10)
    calls = {
        "graph": lambda: ti.circuits.graph(model),
        "eap": lambda: ti.circuits.attribute(model, clean, corrupted, METRIC, method="eap", progress=False),
        "exact": lambda: ti.circuits.attribute(model, clean, corrupted, METRIC, method="exact", progress=False),
        "faithfulness": lambda: ti.circuits.faithfulness(model, clean, corrupted, [["input->logits"]], METRIC,
                                                         progress=False),
        "faithfulness_curve": lambda: ti.circuits.faithfulness_curve(model, clean, corrupted, _scores_of_a_graph(),
                                                                     METRIC, progress=False),
    }
    with _no_forward(model), pytest.raises(UnsupportedError, match=f"not well defined.*{why}"):
        calls[study]()


def _scores_of_a_graph() -> Any:
    model = hooked_model(_cfg()).eval()
    clean, corrupted = _pair(vocab=10)
    return ti.circuits.attribute(model, clean, corrupted, METRIC, method="eap", progress=False)


def test_a_transformer_bridge_is_refused_with_the_reason_before_any_forward_pass(tmp_path):
    pytest.importorskip("transformer_lens.model_bridge")
    from tests.conftest import bridge_llama

    model = bridge_llama(str(tmp_path))
    clean, corrupted = _pair(vocab=10)
    with _no_forward(model), pytest.raises(UnsupportedError, match="not well defined.*HookedTransformer"):
        ti.circuits.attribute(model, clean, corrupted, METRIC, method="exact", progress=False)
    with _no_forward(model), pytest.raises(UnsupportedError, match="not well defined.*HookedTransformer"):
        ti.circuits.faithfulness(model, clean, corrupted, [["input->logits"]], METRIC, progress=False)
