"""The geometry demos run and find what they report (s5-mlp in full; SmolLM2 ones reduced, real_model)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

DEMOS = Path(__file__).resolve().parents[1] / "demos"


def load_demo(name: str):
    spec = importlib.util.spec_from_file_location(name, DEMOS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_s5_demo_finds_the_standard_representation(tmp_path: Path) -> None:
    found = load_demo("s5_representations").main(tmp_path)
    assert found["carrier"] == "standard"
    ablation = found["ablation"]["standard"]
    assert ablation["dim"] == 16 and ablation["loss"] > 5 * ablation["random_max"]
    assert abs(sum(found["embedding_share"]["W_x"].values()) - 1.0) < 1e-6
    assert max(found["embedding_share"]["W_x"], key=found["embedding_share"]["W_x"].get) == "standard"
    summary = (tmp_path / "summary.md").read_text()
    assert "**The standard representation carries the computation.**" in summary
    assert json.loads((tmp_path / "summary.json").read_text())["component_dims"]["6d"] == 36
