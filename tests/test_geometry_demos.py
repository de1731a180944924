"""The geometry demos run and find what they report (s5-mlp in full; SmolLM2 ones reduced, real_model)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

DEMOS = Path(__file__).resolve().parents[1] / "demos"


def load_demo(name: str):
    spec = importlib.util.spec_from_file_location(name, DEMOS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_s5_demo_finds_the_standard_representation(tmp_path: Path) -> None:
    found = load_demo("s5_representations").main(tmp_path)
    assert torch.is_grad_enabled()  # the demo runs in this process: it must not switch autograd off for others
    assert found["carrier"] == "standard"
    ablation = found["ablation"]["standard"]
    assert ablation["dim"] == 16 and ablation["loss"] > 5 * ablation["random_max"]
    assert abs(sum(found["embedding_share"]["W_x"].values()) - 1.0) < 1e-6
    assert max(found["embedding_share"]["W_x"], key=found["embedding_share"]["W_x"].get) == "standard"
    summary = (tmp_path / "summary.md").read_text()
    assert "**The standard representation carries the computation.**" in summary
    assert json.loads((tmp_path / "summary.json").read_text())["component_dims"]["6d"] == 36


def run_demo(name: str, tmp_path: Path, *args: str) -> dict:
    subprocess.run([sys.executable, str(DEMOS / f"{name}.py"), "--results", str(tmp_path), *args], check=True,
                   timeout=1200)
    assert "## Headline" in (tmp_path / "summary.md").read_text()
    assert (tmp_path / "figures.html").read_text().count("plotly") > 0
    return json.loads((tmp_path / "summary.json").read_text())


@pytest.mark.real_model
def test_the_layer_angles_demo_runs_on_smollm2(tmp_path: Path) -> None:
    found = run_demo("layer_angles_smollm2", tmp_path, "--sentences", "12")
    assert found["n_sentences"] == 12 and found["n_layers"] == 30
    # consecutive states of one token are closer than random states of the sentence in the middle layers
    assert all(found["mean_angle"]["target"][i] < found["mean_angle"]["shuffled"][i] for i in range(5, 25))
    assert len(found["target vs shuffled"]["p_corrected"]) == 30


@pytest.mark.real_model
def test_the_paired_states_demo_runs_on_smollm2(tmp_path: Path) -> None:
    found = run_demo("paired_states_smollm2", tmp_path, "--pairs", "12", "--permutations", "99")
    per_layer = found["per_layer"]
    assert found["n_pairs"] == 12 and len(per_layer["rotation_residual"]) == 30
    assert all(r < b for r, b in zip(per_layer["rotation_residual"], per_layer["baseline_rotation"]))
    assert all(0.9 < c <= 1.0 for c in per_layer["mean_cosine"])
