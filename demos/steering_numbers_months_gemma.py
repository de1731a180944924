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


def _best(headline: dict, metric: str = "accuracy") -> dict:
    """The vector x multiplier with the highest effect over random vectors on held-out month lists."""
    rows = [h for h in headline["comparisons"] if h["metric"] == metric]
    return max(rows, key=lambda h: (h["effect"], h["mean"]))


def _row(name: str, headline: dict) -> str:
    chosen = headline["chosen"]
    best = _best(headline)
    on_target = {(h["vector"], _scale(h)): h for h in headline["comparisons"] if h["metric"] == "on_target"}
    number = on_target[(best["vector"], _scale(best))]
    return (f"| {name} | {chosen['vector']} x{chosen['multiplier']:g} (dev accuracy {chosen['accuracy']:.2f}) | "
            f"{best['vector']} x{_scale(best):g} | {best['mean']:.2f} | {best['control_mean']:.2f} | "
            f"{best['effect']:+.2f} [{best['ci_low']:+.2f}, {best['ci_high']:+.2f}] | {number['mean']:.2f} |")


def _sae_rows(headline: dict) -> list[str]:
    out = []
    for h in headline["comparisons"]:
        if h["metric"] == "accuracy" and ("SAE" in h["vector"] or "decomposed" in h["vector"]):
            out.append(f"{h['vector']} x{_scale(h):g}: {h['mean']:.2f} (effect {h['effect']:+.2f} "
                       f"[{h['ci_low']:+.2f}, {h['ci_high']:+.2f}])")
    return out


def write_comparison(smollm2_dir: Path, gemma_dir: Path) -> str:
    """``comparison.md``: the two models' headline results, and what replicates."""
    smol = json.loads((smollm2_dir / "headline.json").read_text())
    gem = json.loads((gemma_dir / "headline.json").read_text())
    b_smol, b_gem = _best(smol), _best(gem)

    def significant(b: dict) -> bool:
        return b["ci_low"] > 0

    sae_best = {name: max((h for h in hl["comparisons"] if h["metric"] == "accuracy"
                           and ("SAE" in h["vector"] or "decomposed" in h["vector"])),
                          key=lambda h: h["effect"]) for name, hl in (("SmolLM2", smol), ("Gemma", gem))}
    lines = [
        "# Numbers-minus-months steering: SmolLM2-135M vs Gemma-3-270M", "",
        "Same study on both (`demos/steering_numbers_months.py`, `demos/steering_numbers_months_gemma.py`): "
        "held-out month lists, accuracy = the steered top-1 token is the number at the same index; effect = "
        "paired difference from random vectors of the same norm, 95% bootstrap interval over prompts.", "",
        "| model | chosen on dev | best on test | accuracy | random | effect [95% CI] | top-1 is a number |",
        "|---|---|---|---|---|---|---|",
        _row("SmolLM2-135M", smol), _row("Gemma-3-270M", gem), "",
        "## What replicates and what does not", "",
    ]
    if significant(b_smol) and significant(b_gem):
        lines.append(f"- **Replicates:** on both models a residual numbers-minus-months vector turns some held-out "
                     f"month lists into the number at the same index, above random vectors (SmolLM2 "
                     f"{b_smol['mean']:.2f} with {b_smol['vector']} x{_scale(b_smol):g}; Gemma "
                     f"{b_gem['mean']:.2f} with {b_gem['vector']} x{_scale(b_gem):g}).")
    else:
        for name, b in (("SmolLM2-135M", b_smol), ("Gemma-3-270M", b_gem)):
            verdict = "beats" if significant(b) else "does not beat"
            lines.append(f"- {name}: the best vector ({b['vector']} x{_scale(b):g}, accuracy {b['mean']:.2f}) "
                         f"{verdict} random vectors (interval {b['ci_low']:+.2f}..{b['ci_high']:+.2f}).")
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
