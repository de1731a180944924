"""The steering demo runs end to end on SmolLM2-135M (a reduced sweep) and writes its results."""

import subprocess
import sys
from pathlib import Path

import pytest

import tl_interp as ti

DEMO = Path(__file__).resolve().parents[1] / "demos" / "steering_numbers_months.py"


@pytest.mark.real_model
def test_steering_demo_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "results"
    cmd = [sys.executable, str(DEMO), "--results", str(out), "--report", str(tmp_path / "page.html"),
           "--layers", "14,26", "--scales", "2", "--seeds", "1"]
    subprocess.run(cmd, check=True, timeout=1800)
    summary = (out / "summary.md").read_text()
    assert "## Headline" in summary and "random" in summary
    report = ti.results.Result.load(out / "report.safetensors")
    assert type(report).__name__ == "SteeringReport"
    assert "months -> numbers" in report.tasks and "unrelated" in report.tasks
    assert any(v.startswith("random ~") for v in report.vectors)
    assert (tmp_path / "page.html").read_text().count("plotly") > 0
