"""Exact circuit verification: batched faithfulness equals a brute-force hook loop, MIB's curve is
computed from it exactly, and the induction circuit of induction-2l is found and carries the behaviour."""

import json

import pytest
import torch

import tl_interp as ti
from tests.circuits_reference import brute_force_faithfulness, mib_names
from tests.conftest import gpt2_style, llama_style
from tl_interp import circuits
from tl_interp.circuits._circuit import Circuit
from tl_interp.circuits._curve import MIB_BUDGETS, faithfulness_curve
from tl_interp.circuits._stability import stability
from tl_interp.engine.executors import LocalExecutor

ARCHITECTURES = {"gpt2": gpt2_style, "llama_gqa_rotary": llama_style}


def _task(model, seed: int = 0, n: int = 4):
    g = torch.Generator().manual_seed(seed)
    vocab = model.cfg.d_vocab
    clean = torch.randint(1, vocab, (n, 7), generator=g)
    corrupted = clean.clone()
    corrupted[:, 1:4] = torch.randint(1, vocab, (n, 3), generator=g)
    correct, wrong = torch.randint(1, vocab, (n,), generator=g), torch.randint(1, vocab, (n,), generator=g)
    rows = torch.arange(n)
    return clean, corrupted, ti.metrics.logit_diff(correct, wrong), lambda logits: (
        logits[rows, -1, correct] - logits[rows, -1, wrong])


def _random_circuits(graph, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    picks = [[e for e in graph.edges if float(torch.rand(1, generator=g)) < p] for p in (0.2, 0.5, 0.8, 0.95)]
    return [(), graph.edges, *picks]


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def model(request):
    return ARCHITECTURES[request.param]()


def test_batched_faithfulness_equals_one_hand_hooked_forward_per_circuit(model) -> None:
    clean, corrupted, metric, score = _task(model)
    graph = circuits.graph(model)
    chosen = _random_circuits(graph)
    result = circuits.faithfulness(model, clean, corrupted, [Circuit(c, graph) for c in chosen], metric,
                                   progress=False)
    reference = brute_force_faithfulness(model, clean, corrupted, chosen, score)
    torch.testing.assert_close(result.values.double(), reference.double(), atol=1e-5, rtol=0)
    # the empty circuit is the corrupted run, the full circuit the clean run
    with torch.no_grad():
        torch.testing.assert_close(reference[0], score(model(corrupted)), atol=1e-5, rtol=0)
        torch.testing.assert_close(reference[1], score(model(clean)), atol=1e-5, rtol=0)


def test_the_curve_is_mibs_trapezoid_of_exactly_evaluated_top_circuits(model) -> None:
    clean, corrupted, metric, score = _task(model, seed=1, n=6)
    runs = [circuits.attribute(model, clean, corrupted, metric, method=m, steps=3, progress=False)
            for m in ("eap", "eap-ig-inputs")]
    curve = faithfulness_curve(model, clean, corrupted, runs, metric, n_boot=50, progress=False,
                               executor=LocalExecutor())
    n_edges = len(runs[0].names)
    with torch.no_grad():
        clean_mean, corrupted_mean = score(model(clean)).double().mean(), score(model(corrupted)).double().mean()
    for i, run in enumerate(runs):
        chosen = [Circuit.top(run, int(b * n_edges)).edges for b in MIB_BUDGETS]
        means = brute_force_faithfulness(model, clean, corrupted, chosen, score).double().mean(-1)
        f = ((means - corrupted_mean) / (clean_mean - corrupted_mean)).tolist()
        cpr = sum((MIB_BUDGETS[j + 1] - MIB_BUDGETS[j]) * (f[j] + f[j + 1]) / 2 for j in range(len(f) - 1))
        cmd = sum((MIB_BUDGETS[j + 1] - MIB_BUDGETS[j]) * (abs(1 - f[j]) + abs(1 - f[j + 1])) / 2
                  for j in range(len(f) - 1))
        torch.testing.assert_close(curve.values[i].double(), torch.tensor(f, dtype=torch.float64), atol=1e-4, rtol=1e-4)
        assert curve.cpr[i].item() == pytest.approx(cpr, abs=1e-4)
        assert curve.cmd[i].item() == pytest.approx(cmd, abs=1e-4)
    assert curve.values[:, -1].tolist() == pytest.approx([1.0, 1.0], abs=1e-4)  # 100%: the whole model
    assert curve.provenance.settings["circuits_evaluated"] <= 2 * len(MIB_BUDGETS) - 1  # the full circuit once


def test_edge_scores_are_means_of_their_per_prompt_scores_so_resampling_needs_no_forward(model) -> None:
    clean, corrupted, metric, _ = _task(model, seed=2, n=6)
    scores = circuits.attribute(model, clean, corrupted, metric, method="eap", progress=False)
    torch.testing.assert_close(scores.per_prompt.mean(0), scores.scores, atol=1e-6, rtol=1e-5)
    result = stability(scores, k=[5, 20], n_boot=100)
    assert 0 <= result.survival.min() and result.survival.max() <= 1
    assert bool((result.extras["ci_low"] <= result.values + 1e-9).all() and (result.values <= result.extras["ci_high"] + 1e-9).all())


def test_circuit_files_of_a_real_graph_use_mib_names_and_round_trip(tmp_path, model) -> None:
    clean, corrupted, metric, _ = _task(model)
    scores = circuits.attribute(model, clean, corrupted, metric, method="eap", progress=False)
    circuit = Circuit.greedy(scores, 40)
    path = tmp_path / "c.json"
    circuit.to_json(path, d_model=model.cfg.d_model)
    data = json.loads(path.read_text())
    assert set(data["edges"]) == set(mib_names(model.cfg.n_layers, model.cfg.n_heads)[1])
    assert data["cfg"]["d_model"] == model.cfg.d_model
    back = Circuit.from_json(path, circuits.graph(model))
    assert back.edges == circuit.edges
    torch.testing.assert_close(back.scores, scores.scores.float())


# -- induction-2l: the known circuit ---------------------------------------------------------
def _induction_task(n: int = 24, half: int = 10, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    r, s = torch.randint(1, 65, (n, half), generator=g), torch.randint(1, 65, (n, half), generator=g)
    bos = torch.zeros(n, 1, dtype=torch.long)
    rows = torch.arange(n)
    return (torch.cat([bos, r, r[:, :-1]], 1), torch.cat([bos, s, r[:, :-1]], 1),
            ti.metrics.logit_diff(r[:, -1], s[:, -1]), lambda lg: lg[rows, -1, r[:, -1]] - lg[rows, -1, s[:, -1]])


def test_induction_top_edges_hold_k_composition_and_a_small_circuit_recovers_the_logit_difference() -> None:
    model = ti.models.load("induction-2l")
    clean, corrupted, metric, score = _induction_task()
    scores = circuits.attribute(model, clean, corrupted, metric, method="eap-ig-inputs", steps=5, progress=False)
    top = [name for name, _ in scores.top(8)]
    assert any(e in top for e in ("a0.h0->a1.h2<k>", "a0.h1->a1.h2<k>", "a0.h2->a1.h2<k>"))
    circuit = Circuit.greedy(scores, 8)
    assert len(circuit) <= 8 and "a1.h2->logits" in circuit
    result = circuits.faithfulness(model, clean, corrupted, [circuit], metric, progress=False)
    reference = brute_force_faithfulness(model, clean, corrupted, [circuit.edges], score)
    torch.testing.assert_close(result.values.double(), reference.double(), atol=1e-4, rtol=1e-5)
    with torch.no_grad():
        clean_v, corrupted_v = score(model(clean)).mean(), score(model(corrupted)).mean()
    f = (reference.mean() - corrupted_v) / (clean_v - corrupted_v)
    assert clean_v - corrupted_v > 5  # the task: induction gives a large logit difference
    assert f > 0.9  # 8 of 52 edges carry most of it, measured exactly


def test_curve_inputs_that_cannot_be_honoured_are_refused_before_any_forward_pass() -> None:
    from tests.conftest import attn_only

    model = gpt2_style()
    clean, corrupted, metric, _ = _task(model)
    scores = circuits.attribute(model, clean, corrupted, metric, method="eap", progress=False)
    other = circuits.attribute(attn_only(), clean, corrupted, metric, method="eap", progress=False)
    with pytest.raises(ti.InputError, match="every EdgeScores must be of the same graph"):
        faithfulness_curve(model, clean, corrupted, [scores, other], metric, progress=False)
    with pytest.raises(ti.OptionError, match=r"budgets must be increasing fractions .* got \[0.5, 0.1\]"):
        faithfulness_curve(model, clean, corrupted, scores, metric, budgets=[0.5, 0.1], progress=False)
    with pytest.raises(ti.OptionError, match="selection must be one of 'top', 'greedy'"):
        faithfulness_curve(model, clean, corrupted, scores, metric, selection="best", progress=False)
