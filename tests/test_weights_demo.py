"""The SmolLM2 weights demo runs (reduced) and reports what it measured."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[1] / "demos" / "smollm2_weights.py"


@pytest.mark.real_model
def test_the_weights_demo_reads_processed_weights_and_finds_heavy_tailed_neurons(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(DEMO), "--results", str(tmp_path), "--neurons", "4", "--random", "20"],
                   check=True, timeout=1200)
    found = json.loads((tmp_path / "summary.json").read_text())
    assert found["weights"]["weights_processed"] is True and found["weights"]["normalization_type"] == "RMSPre"
    assert found["kurtosis"]["neurons_max"] > 10 * found["kurtosis"]["random_max"]
    assert len(found["heavy_tailed_neurons"]) == 4 and abs(found["yes_not_no"]["orthogonal_check"]) < 1e-8
    summary = (tmp_path / "summary.md").read_text()
    assert "## Headline" in summary and "## Not found / caveats" in summary
    assert (tmp_path / "figures.html").read_text().count("plotly") > 0
