"""The demos' summary text is a function of their saved data, and says what that data shows.

No model runs here: every check regenerates text from the committed ``results/`` files
(``summary.json``, ``headline.json``, ``layer_sweep.safetensors``, ``report.safetensors``) and
compares it with the committed ``summary.md`` / ``comparison.md``, so a re-run of a demo writes
the same wording (the Q4_1 weights note, how the steering vector was really chosen) that the
committed results carry, and a hand edit that the data does not support shows up as a diff.
"""

import importlib
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch

import tl_interp as ti

ROOT = Path(__file__).resolve().parents[1]
DEMOS, RESULTS = ROOT / "demos", ROOT / "results"
SMOL, GEMMA = RESULTS / "steering_numbers_months", RESULTS / "steering_numbers_months_gemma"


def demo(name: str):
    """A demo script as a module (its own imports, e.g. ``_shared``, resolve from ``demos/``)."""
    if str(DEMOS) not in sys.path:
        sys.path.insert(0, str(DEMOS))
    return importlib.import_module(name)


def steering(results: Path) -> tuple:
    load = ti.results.Result.load
    headline = json.loads((results / "headline.json").read_text())
    return load(results / "layer_sweep.safetensors"), load(results / "report.safetensors"), headline


@pytest.mark.parametrize("name", ["layer_angles_smollm2", "paired_states_smollm2", "smollm2_weights",
                                  "cross_model_similarity"])
def test_each_smollm2_summary_is_regenerated_exactly_from_its_summary_json(name: str) -> None:
    summary = json.loads((RESULTS / name / "summary.json").read_text())
    committed = (RESULTS / name / "summary.md").read_text()
    assert demo(name).summary_text(summary) == committed
    assert "a **Q4_1 GGUF** file de-quantised to float32" in committed
    assert "Hugging Face transformers reading the same GGUF" in committed


def test_the_weights_note_names_what_the_loaders_read_and_the_tolerance_the_parity_test_asserts() -> None:
    notes = demo("_shared.model_notes")
    from tl_interp.models import _gemma, _smollm2

    assert f".{notes.SMOLLM2_FORMAT}.gguf" in _smollm2._GGUF
    assert notes.GEMMA_FORMAT.lower().replace("_", "-") in _gemma._DIST
    parity_test = (ROOT / "tests" / "test_models_smollm2.py").read_text()
    assert float(re.search(r"^ATOL = (\S+)", parity_test, re.M).group(1)) == float(notes.SMOLLM2_TOLERANCE)
    # the model id a Result carries works as well as the tl_interp name; HTML gets no markdown marks
    plain = notes.weights_note(["SmolLM2-135M-Instruct"], markdown=False)
    assert plain == notes.weights_note(["smollm2-135m"]).replace("**", "").replace("`", "")
    assert "Q4_1 GGUF" in plain and "*" not in plain and "`" not in plain
    assert notes.weights_note(["ordinal-4l"]) == ""


@pytest.mark.parametrize("results", [SMOL, GEMMA], ids=["smollm2", "gemma"])
def test_the_committed_choice_is_the_dev_rule_applied_to_the_committed_sweep(results: Path) -> None:
    sweep, _, headline = steering(results)
    acc, diff = sweep.values[:, :, 0].double(), sweep.extras["logit_diff"][:, :, 0].double()
    # the rule by hand: the highest accuracy, then the highest logit difference among those cells
    ties = (acc == acc.max()).nonzero().tolist()
    i, k = max(ties, key=lambda c: float(diff[c[0], c[1]]))
    chosen = demo("steering_numbers_months").choose(sweep)
    assert (chosen["vector"], chosen["multiplier"]) == (sweep.vectors[i], float(sweep.scales[k]))
    assert (chosen["vector"], chosen["multiplier"]) == (headline["chosen"]["vector"], headline["chosen"]["multiplier"])


def _selection(results: Path, sweep=None) -> str:
    loaded, report, headline = steering(results)
    return demo("steering_numbers_months").selection_text(sweep or loaded, report, headline["comparisons"],
                                                          headline["chosen"])


def test_smollm2_summary_says_logit_difference_alone_chose_x8_and_headlines_its_held_out_figure() -> None:
    sweep, report, headline = steering(SMOL)
    assert bool((sweep.values[:, :, 0] == 0).all()), "the committed dev sweep got no list right"
    text = _selection(SMOL)
    assert text in SMOL.joinpath("summary.md").read_text()
    assert "dev accuracy was 0 in all 36 cells (9 layers x 4 multipliers)" in text
    assert "so the choice was by mean logit difference alone" in text and "**mean-diff L26 x8**" in text
    x8 = next(h for h in headline["comparisons"] if h["vector"] == "mean-diff L26" and h["metric"] == "accuracy"
              and float(h.get("scale", h.get("multiplier"))) == 8.0)
    steered = report.examples("mean-diff L26", 8.0, "months -> numbers")["steered"]
    assert set(steered) == {" ten"} and x8["mean"] == 0.25
    assert 'the chosen mean-diff L26 x8 answers " ten" to every list: accuracy 0.25 [0.00, 0.50], the 3 lists' in text
    # x1's better held-out figure appears only among the scales the rule did not choose
    chosen_part, unchosen_part = text.split("did not choose")
    assert "0.42" not in chosen_part and "x1 0.42 [0.17, 0.67], keeps 0.75" in unchosen_part


def test_gemma_summary_says_a_tie_in_dev_accuracy_was_broken_by_logit_difference() -> None:
    sweep, _, _ = steering(GEMMA)
    acc = sweep.values[:, :, 0]
    n_tied = int((acc == acc.max()).sum())
    text = _selection(GEMMA)
    assert text in GEMMA.joinpath("summary.md").read_text()
    assert n_tied == 6 and f"was shared by {n_tied} of the 36 cells" in text
    assert "so the tie was broken by logit difference" in text
    assert "the chosen mean-diff L15 x2 scores accuracy 0.50 [0.25, 0.75]" in text
    assert "Q4_K_M GGUF" in GEMMA.joinpath("summary.md").read_text()


def test_a_unique_best_dev_accuracy_is_reported_as_the_deciding_criterion() -> None:
    sweep, _, headline = steering(SMOL)
    sweep.values[:, :, 0] = 0.0
    sweep.values[sweep.vectors.index("mean-diff L26"), list(sweep.scales).index(8.0), 0] = 0.5
    text = _selection(SMOL, sweep)
    assert ("dev accuracy 0.50 at mean-diff L26 x8 was the highest of the 36 cells (9 layers x 4 multipliers), so "
            "accuracy alone decided (mean logit difference +9.96)") in text
    assert "logit difference alone" not in text and "shared by" not in text and "tie was broken" not in text


def test_the_summaries_read_the_unsteered_number_list_accuracy() -> None:
    snm = demo("steering_numbers_months")
    for results in (SMOL, GEMMA):
        _, report, _ = steering(results)
        unsteered = float(report.extras["baseline_accuracy"][report._t("numbers (unchanged)")])
        intro = snm.headline_intro(report)
        assert f"unsteered {unsteered:.2f})" in intro and intro in results.joinpath("summary.md").read_text()
    torch.testing.assert_close(float(steering(SMOL)[1].extras["baseline_accuracy"][5]), 11 / 12)


def test_the_comparison_is_regenerated_from_committed_data_and_headlines_the_chosen_settings(tmp_path: Path) -> None:
    smol, gemma = tmp_path / "smol", tmp_path / "gemma"
    shutil.copytree(SMOL, smol)
    shutil.copytree(GEMMA, gemma)
    text = demo("steering_numbers_months_gemma").write_comparison(smol, gemma)
    assert text == GEMMA.joinpath("comparison.md").read_text()
    table = [line for line in text.splitlines() if line.startswith("| SmolLM2-135M") or line.startswith("| Gemma")]
    assert table[0].startswith("| SmolLM2-135M | mean-diff L26 x8 | by logit difference alone: dev accuracy 0 in all "
                               '36 cells | 0.25 (always " ten") | 0.00 | +0.25 [+0.00, +0.50] |')
    assert table[1].startswith("| Gemma-3-270M | mean-diff L15 x2 | dev accuracy 0.57, a 6-way tie broken by logit "
                               "difference | 0.50 | 0.00 | +0.50 [+0.25, +0.75] |")
    assert "best on test" not in text
    head = text.split("## Reading")[0]
    x1_lines = [line for line in head.splitlines() if "0.42" in line]
    assert len(x1_lines) == 1 and x1_lines[0].startswith("- Not chosen, seen on the test lists only")
    assert "SmolLM2-135M: the chosen vector (mean-diff L26 x8, accuracy 0.25) does not beat random" in head


@pytest.mark.parametrize("results,script", [(SMOL, "steering_numbers_months.py"),
                                            (GEMMA, "steering_numbers_months_gemma.py")], ids=["smollm2", "gemma"])
def test_a_steering_summary_is_regenerated_exactly_from_committed_data_up_to_the_generations(
        results: Path, script: str, tmp_path: Path) -> None:
    # greedy generations and the SAE decomposition are not saved (they need the model): stand-ins for
    # those sections, and the comparison stops where they begin
    import types

    import pandas as pd

    snm = demo("steering_numbers_months")
    sweep, report, headline = steering(results)
    committed = results.joinpath("summary.md").read_text()
    seconds = float(re.search(r" in (\d+) s ", committed).group(1))
    parts = types.SimpleNamespace(features=[1], explained=0.5, to_frame=lambda: pd.DataFrame({"feature": [1]}))
    chosen = headline["chosen"]
    snm.write_summary(tmp_path, None, report, sweep, headline["comparisons"], chosen,
                      {"vector": chosen["vector"], "multiplier": chosen["multiplier"]}, parts, [1],
                      snm.examples_table(report, chosen["vector"]), [], seconds, script=f"demos/{script}",
                      report_path=f"reports/{script.replace('.py', '.html')}")
    cut = "## Greedy generations"
    assert tmp_path.joinpath("summary.md").read_text().split(cut)[0] == committed.split(cut)[0]
