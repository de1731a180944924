# %% [markdown]
# # Can a numbers-minus-months vector turn months into numbers? (Gemma-3-270M)
#
# Seed 003 studied a Gemma model; this reruns its question on Gemma-3-270M (base), with
# exactly the study of `demos/steering_numbers_months.py` on SmolLM2-135M: the same battery,
# build/dev/test splits, controls (unsteered, random vectors of the same norm, unrelated
# prompts, seen prompts apart) and 95% bootstrap intervals; residual and SAE-space vectors
# and the decomposition, here with the bundled Gemma SAE `gemma-3-270m-res-l9` (its middle
# layer). Layers swept: every second one (1, 3, ..., 17). Prompts need no prefix: Gemma's
# tokenizer prepends `<bos>` itself, as its SAE's training chunks start.
#
# Then it puts the two models' headline numbers side by side in
# `results/steering_numbers_months_gemma/comparison.md`, from the two `headline.json` files.
#
# Gemma-3-270M is opt-in (`./dev.sh setup --gemma`; Gemma Terms of Use,
# https://ai.google.dev/gemma/terms). Run: `python demos/steering_numbers_months_gemma.py`
# (~20-40 minutes on 2 busy CPU cores: a 262k-token vocabulary makes every unembedding
# 5x SmolLM2's). `--compare-only` rewrites the comparison from saved results.

# %%
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the SmolLM2 demo, whose study this reruns

from steering_numbers_months import SMOLLM2, Setup, main  # noqa: E402
from _shared.model_notes import weights_note  # noqa: E402

import tl_interp as ti  # noqa: E402

GEMMA = Setup(
    model="gemma-3-270m",
    sae="gemma-3-270m-res-l9",
    prefix="",
    layers="1,3,5,7,9,11,13,15,17",
    results="results/steering_numbers_months_gemma",
    report="reports/steering_numbers_months_gemma.html",
    title="Gemma-3-270M",
    script="demos/steering_numbers_months_gemma.py",
)


READING = "## Reading"


# %%
def _scale(row: dict) -> float:
    """A comparison row's scale ("multiplier" in results written before the vocabulary's "scale")."""
    return row.get("scale", row.get("multiplier"))


def _rows(headline: dict, metric: str) -> dict:
    return {(h["vector"], float(_scale(h))): h for h in headline["comparisons"] if h["metric"] == metric}


def _chosen(headline: dict, metric: str = "accuracy") -> dict:
    """The held-out comparison of the vector x multiplier chosen on dev lists: the result to report."""
    c = headline["chosen"]
    return _rows(headline, metric)[(c["vector"], float(c["multiplier"]))]


def _best(headline: dict, metric: str = "accuracy") -> dict:
    """The vector x multiplier with the highest effect on held-out lists: seen after the fact, never chosen by."""
    rows = [h for h in headline["comparisons"] if h["metric"] == metric]
    return max(rows, key=lambda h: (h["effect"], h["mean"]))


def _how(results: Path, headline: dict) -> str:
    """What decided the choice on dev lists, from the saved sweep (accuracy, or logit difference on a tie)."""
    c = headline["chosen"]
    sweep_file = results / "layer_sweep.safetensors"
    if not sweep_file.is_file():
        return f"dev accuracy {c['accuracy']:.2f}"
    acc = ti.results.Result.load(sweep_file).values[:, :, 0]
    tied, cells = int((acc == acc.max()).sum()), acc.numel()
    if tied == cells:
        return f"by logit difference alone: dev accuracy {float(acc.max()):.2g} in all {cells} cells"
    if tied > 1:
        return f"dev accuracy {c['accuracy']:.2f}, a {tied}-way tie broken by logit difference"
    return f"dev accuracy {c['accuracy']:.2f}"


def _one_answer(results: Path, headline: dict) -> str | None:
    """The steered answer when the chosen setting gives the same one to every held-out list."""
    report_file = results / "report.safetensors"
    if not report_file.is_file():
        return None
    c = headline["chosen"]
    answers = set(ti.results.Result.load(report_file).examples(c["vector"], float(c["multiplier"]),
                                                                "months -> numbers")["steered"])
    return answers.pop() if len(answers) == 1 else None


def _row(name: str, results: Path, headline: dict) -> str:
    c = _chosen(headline)
    number = _chosen(headline, "on_target")
    answer = _one_answer(results, headline)
    return (f"| {name} | {c['vector']} x{_scale(c):g} | {_how(results, headline)} | {c['mean']:.2f}"
            + (f" (always \"{answer}\")" if answer else "")
            + f" | {c['control_mean']:.2f} | {c['effect']:+.2f} [{c['ci_low']:+.2f}, {c['ci_high']:+.2f}] | "
            f"{number['mean']:.2f} |")


def write_comparison(smollm2_dir: Path, gemma_dir: Path) -> str:
    """``comparison.md``: the two models' chosen settings on held-out lists, and what replicates."""
    smol = json.loads((smollm2_dir / "headline.json").read_text())
    gem = json.loads((gemma_dir / "headline.json").read_text())
    models = (("SmolLM2-135M", smol), ("Gemma-3-270M", gem))
    c_smol, c_gem = _chosen(smol), _chosen(gem)

    def significant(b: dict) -> bool:
        return b["ci_low"] > 0

    def label(h: dict) -> str:
        return f"{h['vector']} x{_scale(h):g}"

    sae_best = {name: max((h for h in hl["comparisons"] if h["metric"] == "accuracy"
                           and ("SAE" in h["vector"] or "decomposed" in h["vector"])),
                          key=lambda h: h["effect"]) for name, hl in (("SmolLM2", smol), ("Gemma", gem))}
    lines = [
        "# Numbers-minus-months steering: SmolLM2-135M vs Gemma-3-270M", "",
        "Same study on both (`demos/steering_numbers_months.py`, `demos/steering_numbers_months_gemma.py`): "
        "held-out month lists, accuracy = the steered top-1 token is the number at the same index; effect = "
        "paired difference from random vectors of the same norm, 95% bootstrap interval over prompts. Each row is "
        "the setting chosen on dev lists (rule: accuracy first, mean logit difference to break ties; the column "
        "says what decided).", "",
        weights_note(["smollm2-135m", "gemma-3-270m"]), "",
        "| model | chosen on dev | decided by | held-out accuracy | random | effect [95% CI] | top-1 is a number |",
        "|---|---|---|---|---|---|---|",
        _row("SmolLM2-135M", smollm2_dir, smol), _row("Gemma-3-270M", gemma_dir, gem), "",
        "## What replicates and what does not", "",
    ]
    if significant(c_smol) and significant(c_gem):
        lines.append(f"- **Replicates:** on both models the chosen residual numbers-minus-months vector turns some "
                     f"held-out month lists into the number at the same index, above random vectors (SmolLM2 "
                     f"{c_smol['mean']:.2f} with {label(c_smol)}; Gemma {c_gem['mean']:.2f} with {label(c_gem)}).")
    else:
        for name, c in models:
            b = _chosen(c)
            verdict = "beats" if significant(b) else "does not beat"
            lines.append(f"- {name}: the chosen vector ({label(b)}, accuracy {b['mean']:.2f}) {verdict} random "
                         f"vectors (interval {b['ci_low']:+.2f}..{b['ci_high']:+.2f}).")
    unchosen = [(name, _best(hl)) for name, hl in models if _best(hl) is not _chosen(hl)
                and _best(hl)["effect"] > _chosen(hl)["effect"]]
    if unchosen:
        lines.append("- Not chosen, seen on the test lists only (an observation after the fact, not a selected "
                     "result): the best held-out cell was " + "; ".join(
                         f"{name} {label(b)}, {b['mean']:.2f} [{b['ci_low']:+.2f}, {b['ci_high']:+.2f}]"
                         for name, b in unchosen) + ".")
    for name, h in sae_best.items():
        verdict = "above random" if h["ci_low"] > 0 else "not above random"
        lines.append(f"- SAE-layer vectors on {name} (SAE space or decomposed): best {h['vector']} "
                     f"x{_scale(h):g}, accuracy {h['mean']:.2f}, {verdict}.")
    lines += ["", "Full tables: [SmolLM2](../steering_numbers_months/summary.md), "
              "[Gemma](summary.md).", ""]
    text = "\n".join(lines)
    target = gemma_dir / "comparison.md"
    if target.is_file() and READING in target.read_text():  # a hand-written reading of the numbers stays
        text += "\n" + READING + target.read_text().split(READING, 1)[1]
    target.write_text(text)
    return text


# %%
if __name__ == "__main__":
    report = None if "--compare-only" in sys.argv else main(GEMMA)
    if (Path(SMOLLM2.results) / "headline.json").is_file():  # the comparison needs SmolLM2's run too
        print(write_comparison(Path(SMOLLM2.results), Path(GEMMA.results)))

# %% [markdown]
# In a notebook the Gemma steering report displays itself.

# %%
if __name__ == "__main__" and report is not None:
    ti.viz.show(report)
