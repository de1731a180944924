"""The EAP-IG convergence demo: its committed summary is a function of its committed numbers, and
those numbers show what the summary and docs/circuits.md say (EAP-IG's error falls with steps and
with the model's non-linearity; on induction-2l it does not close)."""

import importlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "circuits_eap_ig_convergence"


def _demo():
    if str(ROOT / "demos") not in sys.path:
        sys.path.insert(0, str(ROOT / "demos"))
    return importlib.import_module("circuits_eap_ig_convergence")


def test_the_committed_summary_is_regenerated_exactly_from_its_headline() -> None:
    headline = json.loads((RESULTS / "headline.json").read_text())
    assert _demo().summary_text(headline) == (RESULTS / "summary.md").read_text()


def test_the_committed_numbers_show_convergence_towards_linearity_and_none_on_induction() -> None:
    headline = json.loads((RESULTS / "headline.json").read_text())
    steps, rows = headline["steps"], headline["rows"]
    toy = [rows[name] for name in rows if name.startswith("toy")]
    for row in toy:  # more steps, closer
        errors = [row[f"ig{s}"] for s in steps]
        assert errors == sorted(errors, reverse=True)
    last = [row[f"ig{steps[-1]}"] for row in toy]  # the scales are listed from least to most linear
    assert last == sorted(last, reverse=True) and last[-1] < 1e-3
    induction = rows["induction-2l"]
    assert induction[f"ig{steps[-1]}"] > 0.5  # a saturated mechanism: the estimate stays far from exact


def test_the_demo_computes_the_same_numbers_again() -> None:
    demo = _demo()
    headline = json.loads((RESULTS / "headline.json").read_text())
    row, _ = demo.errors(demo.toy_model(0.1), *demo.toy_task(), [1, 64])
    for key in ("eap", "ig1", "ig64"):
        assert abs(row[key] - headline["rows"]["toy (W_Q x 0.1)"][key]) <= 1e-3 * headline["rows"]["toy (W_Q x 0.1)"][key]


def test_the_table_in_the_docs_is_the_committed_numbers() -> None:
    headline = json.loads((RESULTS / "headline.json").read_text())
    docs = (ROOT / "docs" / "circuits.md").read_text().splitlines()
    rows = {"toy, W_Q x 1": "toy (W_Q x 1)", "toy, W_Q x 0.3": "toy (W_Q x 0.3)", "toy, W_Q x 0.1": "toy (W_Q x 0.1)",
            "toy, W_Q x 0.03": "toy (W_Q x 0.03)", "induction-2l": "induction-2l"}
    found = 0
    for line in docs:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] in rows and len(cells) == 6:
            row = headline["rows"][rows[cells[0]]]
            for cell, key in zip(cells[1:], ("eap", "ig1", "ig4", "ig16", "ig64")):
                assert float(cell) == float(f"{row[key]:.2g}"), (cells[0], key)  # two significant figures
            found += 1
    assert found == len(rows)
