"""The SmolLM2 circuits demo runs end to end (reduced) and writes its summary, headline and MIB circuit file."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import tl_interp as ti
from tl_interp.circuits._circuit import edge_ends

DEMO = Path(__file__).resolve().parents[1] / "demos" / "circuits_months_smollm2.py"


@pytest.mark.real_model
def test_circuits_months_demo_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "results"
    cmd = [sys.executable, str(DEMO), "--results", str(out), "--quick", "--circuit-edges", "30", "--prompts", "4",
           "--n-boot", "100"]  # reduced: CI runs it in minutes
    subprocess.run(cmd, check=True, timeout=3600)
    summary = (out / "summary.md").read_text()
    assert "## Found" in summary and "## Not found / caveats" in summary and "CPR" in summary
    headline = json.loads((out / "headline.json").read_text())
    assert set(headline["cpr"]) == {"eap", "eap-ig-inputs"}
    assert headline["circuit"]["clean"] > headline["circuit"]["corrupted"]  # the corruption moves the metric
    circuit_file = json.loads((out / "circuit.json").read_text())
    assert len(circuit_file["edges"]) == headline["graph_edges"]
    assert all(edge_ends(e) for e in circuit_file["edges"])  # every key parses as an MIB edge name
    chosen = [e for e, v in circuit_file["edges"].items() if v["in_graph"]]
    assert sorted(chosen) == sorted(headline["circuit"]["edges"])
    curve = ti.results.Result.load(out / "curve.safetensors")
    assert type(curve).__name__ == "FaithfulnessCurve" and curve.values.shape == (2, 10)
