"""Pictures of circuits: the SVG graph draws every edge once, weighted and coloured by its score."""

import re
from types import SimpleNamespace

import torch

import tl_interp as ti
from tests.circuits_reference import mib_names
from tl_interp.circuits._circuit import Circuit
from tl_interp.circuits._curve import MIB_BUDGETS, FaithfulnessCurve
from tl_interp.results import Provenance


def _circuit(n: int = 30, seed: int = 0) -> Circuit:
    nodes, edges = mib_names(3, 3)
    graph = SimpleNamespace(nodes=nodes, edges=edges, d_model=8)
    scores = torch.randn(len(edges), generator=torch.Generator().manual_seed(seed))
    return Circuit.greedy(SimpleNamespace(graph=graph, names=edges, scores=scores, method="eap"), n)


def test_the_svg_draws_each_edge_once_with_width_by_score_and_colour_by_sign() -> None:
    circuit = _circuit()
    page = circuit._repr_html_()
    paths = re.findall(r'<path [^>]*stroke="(#[0-9a-f]+)"[^>]*stroke-width="([0-9.]+)"[^>]*><title>([^<]+)</title>', page)
    assert sorted(t.split(":")[0].replace("&lt;", "<").replace("&gt;", ">") for _, _, t in paths) == sorted(circuit.edges)
    score = dict(zip(circuit.graph.edges, circuit.scores.tolist()))
    for colour, width, title in paths:
        edge = title.split(":")[0].replace("&lt;", "<").replace("&gt;", ">")
        assert colour == ("#2166ac" if score[edge] >= 0 else "#b2182b")
    widest = max(paths, key=lambda p: float(p[1]))[2].split(":")[0].replace("&lt;", "<").replace("&gt;", ">")
    assert abs(score[widest]) == max(abs(score[e]) for e in circuit.edges)
    # one box per node the circuit touches
    assert sorted(re.findall(r'text-anchor="middle">([^<]+)</text>', page)) == sorted(circuit.nodes)


def test_large_circuits_draw_their_strongest_edges_and_say_so() -> None:
    from tl_interp.viz.circuit import circuit_html

    circuit = _circuit(150)
    page = circuit_html(circuit, max_edges=10)
    assert page.count("<path") == 10 and "drawing the 10 largest |score| edges" in page


def test_a_report_carries_the_circuit_and_the_curve(tmp_path) -> None:
    f = torch.linspace(0, 1, len(MIB_BUDGETS))[None].repeat(2, 1)
    extras = {"budgets": torch.tensor(MIB_BUDGETS, dtype=torch.float64), "f_low": f - 0.1, "f_high": f + 0.1,
              "cpr": torch.tensor([0.5, 0.4]), "cpr_low": torch.tensor([0.4, 0.3]), "cpr_high": torch.tensor([0.6, 0.5]),
              "cmd": torch.tensor([0.3, 0.2]), "cmd_low": torch.tensor([0.2, 0.1]), "cmd_high": torch.tensor([0.4, 0.3]),
              "survival": torch.ones(2, len(MIB_BUDGETS))}
    curve = FaithfulnessCurve(f, ("method", "budget"), "logit diff", Provenance("m"),
                              labels={"method": ("eap", "exact"), "budget": tuple(f"{b * 100:g}%" for b in MIB_BUDGETS)},
                              extras=extras)
    fig = curve.figure()
    assert [t.name for t in fig.data if t.showlegend is not False] == ["eap (CPR 0.5, CMD 0.3)", "exact (CPR 0.4, CMD 0.2)"]
    assert fig.layout.xaxis.type == "log"
    page = ti.viz.Report("circuits").add(_circuit()).add(curve).write(tmp_path / "r.html")
    text = open(page).read()
    assert "<svg" in text and "CPR (higher better)" in text and "top-edge survival" in text
    assert 'src="https://cdn.plot.ly' not in text and text.count("<svg") >= 1  # offline: plotly.js is inlined
    back = ti.results.Result.load(curve.save(tmp_path / "c.safetensors"))
    torch.testing.assert_close(back.cpr, curve.cpr)
