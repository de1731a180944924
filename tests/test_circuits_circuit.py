"""Circuits: top-n and greedy builders as EAP-IG defines them, and MIB circuit files that round-trip."""

import heapq
import json
from types import SimpleNamespace

import pytest
import torch

from tests.circuits_reference import mib_names
from tl_interp.circuits._circuit import Circuit, edge_ends, prune_edges
from tl_interp.errors import ArtifactError, InputError, OptionError, SelectionError


def _scores(n_layers: int = 3, n_heads: int = 2, *, mlp: bool = True, seed: int = 0) -> SimpleNamespace:
    nodes, edges = mib_names(n_layers, n_heads, mlp=mlp)
    graph = SimpleNamespace(nodes=nodes, edges=edges, d_model=16)
    scores = torch.randn(len(edges), generator=torch.Generator().manual_seed(seed))
    return SimpleNamespace(graph=graph, names=edges, scores=scores, method="eap")


def _connected(edges: set[str]) -> bool:
    """Every edge lies on a path from input to logits (checked by search, not by pruning)."""
    ends = [edge_ends(e)[:2] for e in edges]
    from_input, to_logits = {"input"}, {"logits"}
    for _ in range(len(ends) + 1):
        from_input |= {r for s, r in ends if s in from_input}
        to_logits |= {s for s, r in ends if r in to_logits}
    return all(s in from_input and r in to_logits for s, r in ends)


def _reference_greedy(names, values, n):
    """EAP-IG's apply_greedy transcribed: merge sorted candidate lists as parents join."""
    key = lambda i: abs(float(values[i]))  # noqa: E731
    into = {}
    for i, e in enumerate(names):
        into.setdefault(edge_ends(e)[1], []).append(i)
    stream = heapq.merge(sorted(into["logits"], key=key, reverse=True), key=key, reverse=True)
    present, taken = {"logits"}, set()
    for _ in range(n):
        i = next(stream)
        taken.add(names[i])
        sender = edge_ends(names[i])[0]
        if sender not in present:
            present.add(sender)
            stream = heapq.merge(stream, sorted(into.get(sender, []), key=key, reverse=True), key=key, reverse=True)
    return taken


@pytest.mark.parametrize("n", [1, 5, 20, 60])
def test_greedy_circuits_are_connected_from_input_to_logits(n: int) -> None:
    for seed in range(5):
        scores = _scores(seed=seed)
        circuit = Circuit.greedy(scores, n)
        assert _connected(set(circuit.edges)) and len(circuit) <= n
        assert circuit.edges or n < 20  # a tiny budget may be pruned away entirely, as in the reference


def test_greedy_takes_the_edges_the_reference_greedy_takes_before_pruning() -> None:
    scores = _scores(4, 3, seed=1)
    for n in (1, 7, 30, 100):
        ours = Circuit.greedy(scores, n, prune=False)
        assert set(ours.edges) == _reference_greedy(scores.names, scores.scores, n)
        assert set(Circuit.greedy(scores, n).edges) == prune_edges(ours.edges)


def test_top_takes_the_largest_absolute_scores_then_prunes() -> None:
    scores = _scores(seed=2)
    n = 25
    raw = Circuit.top(scores, n, prune=False)
    expected = {scores.names[i] for i in scores.scores.abs().argsort(descending=True)[:n].tolist()}
    assert set(raw.edges) == expected
    signed = Circuit.top(scores, n, absolute=False, prune=False)
    assert set(signed.edges) == {scores.names[i] for i in scores.scores.argsort(descending=True)[:n].tolist()}
    pruned = Circuit.top(scores, n)
    assert set(pruned.edges) <= expected and _connected(set(pruned.edges))


def test_pruning_removes_dangling_nodes_until_nothing_changes() -> None:
    # a0.h1 has no input; once it goes, m0 has no input either (its only edge came from a0.h1)
    edges = {"input->a0.h0<v>", "a0.h0->logits", "a0.h1->m0", "m0->logits", "input->a1.h0<q>"}
    assert prune_edges(edges) == {"input->a0.h0<v>", "a0.h0->logits"}


def test_circuit_nodes_are_the_ends_of_its_edges_in_graph_order() -> None:
    scores = _scores(2, 2)
    circuit = Circuit(("a1.h0->logits", "a0.h1->a1.h0<k>", "input->a0.h1<q>"), scores.graph)
    assert circuit.nodes == ("input", "a0.h1", "a1.h0", "logits")
    assert circuit.edges == ("input->a0.h1<q>", "a0.h1->a1.h0<k>", "a1.h0->logits")


def test_a_misspelled_edge_is_refused_with_a_suggestion() -> None:
    scores = _scores(2, 2)
    with pytest.raises(InputError, match=r"did you mean 'a0.h1->a1.h0<k>'"):
        Circuit(("a0.h1->a1.h0<K>",), scores.graph)
    with pytest.raises(SelectionError, match=r"k=10000 is out of range; choose 0 <= k <= \d+"):
        Circuit.top(scores, 10_000)


@pytest.mark.parametrize("mlp", [True, False])
def test_json_files_round_trip_with_mib_edge_names(tmp_path, mlp: bool) -> None:
    scores = _scores(3, 2, mlp=mlp, seed=3)
    circuit = Circuit.greedy(scores, 12)
    path = tmp_path / "circuit.json"
    circuit.to_json(path)
    data = json.loads(path.read_text())
    # every key is an MIB edge name and every MIB edge of the graph is there
    assert sorted(data["edges"]) == sorted(mib_names(3, 2, mlp=mlp)[1])
    assert data["cfg"] == {"n_layers": 3, "n_heads": 2, "parallel_attn_mlp": False, "d_model": 16}
    assert {e for e, v in data["edges"].items() if v["in_graph"]} == set(circuit.edges)
    assert data["nodes"]["logits"]["in_graph"] and {n for n, v in data["nodes"].items() if v["in_graph"]} == set(circuit.nodes)
    back = Circuit.from_json(path, scores.graph)
    assert back.edges == circuit.edges
    torch.testing.assert_close(back.scores, scores.scores.float())
    assert Circuit.from_json(data, scores.graph).edges == circuit.edges


def test_circuit_files_for_another_model_or_not_circuits_are_refused(tmp_path) -> None:
    scores = _scores(3, 2)
    data = Circuit.top(scores, 5).to_json()
    with pytest.raises(InputError, match="n_heads=2, this graph has n_heads=3"):
        Circuit.from_json(data, _scores(3, 3).graph)
    # a parallel-block model's edges all exist in the sequential graph too: only cfg tells them apart
    parallel = {**data, "cfg": {**data["cfg"], "parallel_attn_mlp": True}}
    with pytest.raises(InputError, match="parallel_attn_mlp=True, this graph has parallel_attn_mlp=False"):
        Circuit.from_json(parallel, scores.graph)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ArtifactError, match="cannot read the circuit file"):
        Circuit.from_json(bad, scores.graph)
    with pytest.raises(ArtifactError, match="not an MIB circuit file"):
        Circuit.from_json({"nodes": {}}, scores.graph)
