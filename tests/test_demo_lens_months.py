"""The months lens / DLA / path-patching demo runs end to end on SmolLM2-135M (reduced) and writes its results."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import tl_interp as ti

DEMO = Path(__file__).resolve().parents[1] / "demos" / "lens_months_smollm2.py"


@pytest.mark.real_model
def test_lens_months_demo_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "results"
    cmd = [sys.executable, str(DEMO), "--results", str(out), "--pairs", "3", "--top", "1",
           "--first-sender-layer", "20"]
    subprocess.run(cmd, check=True, timeout=1800)
    summary = (out / "summary.md").read_text()
    assert "## Headline" in summary and "## Not found / caveats" in summary
    found = json.loads((out / "headline.json").read_text())
    assert found["lens"]["top1_fraction"][-1] == 1.0  # the model's own output says the answer on every prompt
    assert found["base"] > 0 > found["source"]  # clean prefers the clean answer, corrupted the corrupted one
    direct = ti.results.Result.load(out / "direct_paths.safetensors")
    assert direct.axes == ("sender", "receivers") and direct.values.shape == (10 * 9 + 10, 1)
    assert (out / "figures.html").read_text().count("plotly") > 0
