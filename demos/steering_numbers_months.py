# %% [markdown]
# # Can a numbers-minus-months vector turn months into numbers? (SmolLM2-135M)
#
# Seed 003's question, on the real SmolLM2-135M-Instruct, with the controls and statistics
# the original notebook lacked. "January, February, March," continues with " April". Add a
# steering vector built as *number lists minus month lists*: does the model now say " four",
# the number at the same position?
#
# Plan (every choice is made before looking at the test prompts):
#
# 1. Prompts: lists of 3-5 consecutive items; each (start, length) combination goes to one
#    of three splits by a fixed rule: **build** (the vectors are read from these), **dev**
#    (layer and multiplier are chosen on these), **test** (reported).
# 2. Vectors: residual mean difference at every third layer; the best layer by mean logit
#    difference on dev month lists; then at that layer a PCA vector, and at the SAE's layer
#    (15) the mean difference of SAE features, and the residual vector decomposed into SAE
#    features with only its number-side (positive) features kept, in residual and SAE space.
# 3. Evaluation: months, weekdays, month and weekday sentences re-answered with the number at
#    the same index, number lists with their normal answer (steering should not break them);
#    controls: unsteered, random vectors of the same norm (3 seeds), unrelated prompts, and
#    prompts used to build the vector kept in separate "(seen)" columns; 95% bootstrap
#    intervals over prompts.
#
# Spanish, in seed 003's battery, is left out: SmolLM2-135M's tokenizer splits the Spanish
# number words and months (" cuatro" is " cu" + "atro"), and next-token accuracy needs
# single-token answers (evaluate says so, naming the answer, if one is given).
#
# Run: `python demos/steering_numbers_months.py` (writes `results/steering_numbers_months/`
# and `reports/steering_numbers_months.html`; 5-10 minutes on 2 CPU cores).

# %%
import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import tl_interp as ti
from tl_interp import site
from tl_interp.steering import Controls
from tl_interp.viz import Report

sys.path.insert(0, str(Path(__file__).resolve().parent))  # demos/_shared/model_notes.py
from _shared.model_notes import weights_note  # noqa: E402

NUMBERS = "one two three four five six seven eight nine ten eleven twelve".split()
MONTHS = ("January February March April May June July August September October November "
          "December").split()
WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
PREFIX = "<|im_start|>"  # the SAE was trained on text starting like this (see its card)
SAE_NAME = "smollm2-135m-res-l15"


@dataclass(frozen=True)
class Setup:
    """What differs between the models this study runs on (``demos/steering_numbers_months_gemma.py``)."""

    model: str = "smollm2-135m"
    sae: str = SAE_NAME
    prefix: str = PREFIX  # text every prompt starts with (SmolLM2 adds no BOS of its own)
    layers: str = "2,5,8,11,14,17,20,23,26"
    results: str = "results/steering_numbers_months"
    report: str = "reports/steering_numbers_months.html"
    title: str = "SmolLM2-135M"
    script: str = "demos/steering_numbers_months.py"


SMOLLM2 = Setup()


def split_of(start: int, length: int) -> str:
    """Fixed rule: a quarter of the (start, length) combinations build, a quarter dev, half test."""
    return {0: "build", 1: "dev", 2: "test", 3: "test"}[(7 * start + 3 * length) % 4]


def lists(items: list[str], split: str, target: list[str], prefix: str = PREFIX) -> list[tuple[str, str]]:
    """(prompt, the target domain's item at the next index) for lists of 3..5 items."""
    out = []
    for length in (3, 4, 5):
        for start in range(len(items) - length):
            if start + length < len(target) and split_of(start, length) == split:
                out.append((prefix + ", ".join(items[start:start + length]) + ",", " " + target[start + length]))
    return out


def sentences(items: list[str], templates: list[str], target: list[str], prefix: str = PREFIX) -> list[tuple[str, str]]:
    return [(prefix + t.format(x=items[i]), " " + target[i + 1])
            for t in templates for i in range(min(len(items), len(target)) - 1)]


def pairs(split: str, prefix: str = PREFIX) -> tuple[list[str], list[str]]:
    """Number lists and month lists with the same (start, length): the vector's inputs."""
    pos, neg = [], []
    for length in (3, 4, 5):
        for start in range(len(MONTHS) - length):
            if start + length < len(NUMBERS) and split_of(start, length) == split:
                pos.append(prefix + ", ".join(NUMBERS[start:start + length]) + ",")
                neg.append(prefix + ", ".join(MONTHS[start:start + length]) + ",")
    return pos, neg


# %%
def main(setup: Setup = SMOLLM2) -> Any:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", default=setup.results)
    parser.add_argument("--report", default=setup.report)
    parser.add_argument("--layers", default=setup.layers)
    parser.add_argument("--scales", default="1,2,4,8", help="steering scales, comma-separated")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--figures-only", action="store_true",
                        help="only redraw figures.html and the HTML report from saved results")
    args = parser.parse_args()
    if args.figures_only:
        out = Path(args.results)
        report, sweep = (ti.results.Result.load(out / f) for f in ("report.safetensors", "layer_sweep.safetensors"))
        write_figures(out, report, sweep)
        return
    t0 = time.time()
    torch.manual_seed(0)
    model = ti.models.load(setup.model)
    sae = ti.models.load_sae(setup.sae)
    prefix = setup.prefix
    mults = [float(m) for m in args.scales.split(",")]

    # %% 1. vectors at every third layer, the layer chosen on dev prompts
    pos, neg = pairs("build", prefix)
    layers = [int(x) for x in args.layers.split(",")]
    sweep_vectors = [v.renamed(f"mean-diff L{v.layer}") for v in ti.steering.contrast_vectors(
        model, pos, neg, [site("resid_pre", layer) for layer in layers])]
    dev = {"months": lists(MONTHS, "dev", NUMBERS, prefix)}
    sweep = ti.steering.evaluate(model, dev, sweep_vectors, mults, controls=Controls(random_seeds=(), unrelated_prompts=()),
                                 progress=True)
    best = choose(sweep)
    layer = int(best["vector"].split("L")[-1])
    print(f"chosen on dev month lists: layer {layer}, multiplier {best['multiplier']:g} "
          f"(accuracy {best['accuracy']:.2f}, mean logit diff {best['logit_diff']:.2f})")

    # %% 2. the vectors compared at the chosen layer and at the SAE's layer
    sae_layer = int(sae.cfg.metadata.hook_name.split(".")[1])
    resid = ti.steering.contrast_vector(model, pos, neg, site("resid_pre", layer), name=f"mean-diff L{layer}")
    pca = ti.steering.pca_vector(model, pos, neg, site("resid_pre", layer), name=f"PCA L{layer}")
    resid_sae_layer = ti.steering.contrast_vector(model, pos, neg, sae.cfg.metadata.hook_name,
                                                  name=f"mean-diff L{sae_layer}")
    in_sae = ti.steering.sae_contrast_vector(model, sae, pos, neg, name=f"SAE-space mean-diff L{sae_layer}")
    parts = ti.steering.decompose(resid_sae_layer, sae, k=32)
    number_side = [f for f, c in zip(parts.features, parts.coefficients.tolist()) if c > 0]
    kept = parts.keep(number_side).renamed(f"decomposed L{sae_layer}, number-side features")
    kept_sae = parts.sae_vector(number_side).renamed(f"decomposed L{sae_layer}, number-side, SAE space")
    vectors = [resid, pca] + ([resid_sae_layer] if layer != sae_layer else []) + [in_sae, kept, kept_sae]

    # %% 3. the battery, with controls
    tasks = {
        "months -> numbers": lists(MONTHS, "test", NUMBERS, prefix) + lists(MONTHS, "build", NUMBERS, prefix),
        "weekdays -> numbers": lists(WEEKDAYS, "test", NUMBERS, prefix) + lists(WEEKDAYS, "build", NUMBERS, prefix),
        "month sentences -> numbers": sentences(MONTHS, ["This month is {x}, next month is",
                                                         "The month after {x} is"], NUMBERS, prefix),
        "weekday sentences -> numbers": sentences(WEEKDAYS, ["Today is {x}, tomorrow is",
                                                             "The day after {x} is"], NUMBERS, prefix),
        "numbers (unchanged)": lists(NUMBERS, "test", NUMBERS, prefix),
    }
    report = ti.steering.evaluate(model, tasks, vectors, mults, controls=Controls(random_seeds=tuple(range(args.seeds))),
                                  progress=True)
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    report.save(out / "report.safetensors")
    sweep.save(out / "layer_sweep.safetensors")

    # %% 4. the headline comparisons against the random-vector control
    head = [report.compare(v.name, m, "months -> numbers", metric=metric)
            for v in vectors for m in mults for metric in ("accuracy", "on_target", "logit_diff")]
    best_final = {"vector": resid.name, "multiplier": best["multiplier"]}
    examples = examples_table(report, resid.name)
    generations = ti.steering.generate(model, [prefix + "January, February, March,", prefix + "Today is Monday, tomorrow is"],
                                       resid, [0.0, best_final["multiplier"]], max_new_tokens=6)
    write_summary(out, model, report, sweep, head, best, best_final, parts, number_side, examples, generations,
                  time.time() - t0, script=setup.script, report_path=args.report)
    write_html(Path(args.report), report, sweep, head, examples, setup.title)
    write_figures(out, report, sweep)
    print(f"done in {time.time() - t0:.0f} s; results in {out}")
    return report


# %%
def choose(sweep) -> dict:
    """The dev sweep's cell: the question's metric (accuracy) first, mean logit difference to break ties."""
    acc, diff = sweep.values[:, :, 0].double(), sweep.extras["logit_diff"][:, :, 0].double()
    i, k = divmod(int((acc * 1e6 + diff).flatten().argmax()), len(sweep.scales))
    return {"vector": sweep.vectors[i], "multiplier": float(sweep.scales[k]), "accuracy": float(acc[i, k]),
            "logit_diff": float(diff[i, k])}


def _scale(row: dict) -> float:
    """A comparison row's scale ("multiplier" in results written before the vocabulary's "scale")."""
    return row.get("scale", row.get("multiplier"))


def selection_text(sweep, report, head: list[dict], best: dict, held: str = "months -> numbers",
                   keep: str = "numbers (unchanged)") -> str:
    """How the vector was chosen and how the chosen setting did on held-out lists, from the data alone.

    Says which criterion actually decided (accuracy, or logit difference when accuracy tied), reports
    the chosen cell's held-out accuracy as the result, and the vector's other scales as not chosen.
    """
    acc, diff = sweep.values[:, :, 0].double(), sweep.extras["logit_diff"][:, :, 0].double()
    n_vectors, n_scales = acc.shape
    cells = acc.numel()
    grid = f"{n_vectors} layers x {n_scales} multipliers"
    name, scale = best["vector"], float(best["multiplier"])
    label = f"{name} x{scale:g}"
    # the chosen cell's dev figures, read from the sweep itself
    cell = (sweep.vectors.index(name), [float(m) for m in sweep.scales].index(scale))
    dev_acc, dev_diff = float(acc[cell]), float(diff[cell])
    top = acc.max()
    tied = [(sweep.vectors[i], float(sweep.scales[k])) for i, k in (acc == top).nonzero().tolist()]
    n_dev = len(sweep._prompt_index(sweep.tasks[0]))
    text = [f"Chosen on {n_dev} dev month lists: **{label}**. The rule was accuracy first, mean logit difference "
            "to break ties"]
    if len(tied) == cells:
        text.append(f", but dev accuracy was {float(top):.2g} in all {cells} cells ({grid}), so the choice was by mean "
                    f"logit difference alone ({dev_diff:+.2f} at {label}, the largest).")
    elif len(tied) == 1:
        text.append(f": dev accuracy {dev_acc:.2f} at {label} was the highest of the {cells} cells "
                    f"({grid}), so accuracy alone decided (mean logit difference {dev_diff:+.2f}).")
    else:
        others = ", ".join(f"{v} x{m:g}" for v, m in tied if (v, m) != (name, scale))
        text.append(f": the highest dev accuracy, {dev_acc:.2f}, was shared by {len(tied)} of the {cells} "
                    f"cells ({grid}; also {others}), and among them {label} had the largest mean logit difference "
                    f"({dev_diff:+.2f}), so the tie was broken by logit difference.")
    rows = {(h["vector"], float(_scale(h))): h for h in head
            if h["metric"] == "accuracy" and h.get("task", held) == held}

    def kept(m: float) -> float:
        return float(report.values[report._v(name), report._m(m), report._t(keep)])

    def figure(m: float) -> str:
        a = rows[(name, m)]
        return f"{a['mean']:.2f} [{a['ci_low']:.2f}, {a['ci_high']:.2f}]"

    chosen = report.examples(name, scale, held)
    answers = set(chosen["steered"])
    what = f"scores accuracy {figure(scale)}"
    if len(answers) == 1:  # one answer whatever the list: say so, it is what the accuracy measures
        answer = answers.pop()
        what = (f"answers \"{answer}\" to every list: accuracy {figure(scale)}, the {int(chosen['correct'].sum())} "
                f"lists whose answer is{answer}")
    text.append(f" Test month lists: {len(report._prompt_index(held))} held-out prompts (never used to build or "
                f"choose). On them the chosen {label} {what} (random vectors of the same norm "
                f"{rows[(name, scale)]['control_mean']:.2f}), and it keeps {kept(scale):.2f} of plain number lists.")
    unchosen = [m for m in report.scales if float(m) != scale and (name, float(m)) in rows]
    if unchosen:
        text.append(f" The scales the rule did not choose ({name}; held-out observations, not selected results): "
                    + "; ".join(f"x{m:g} {figure(float(m))}, keeps {kept(float(m)):.2f}" for m in unchosen) + ".")
    return "".join(text)


def examples_table(report, name: str, task: str = "months -> numbers"):
    """Per-prompt answers of one vector on ``task``, a column per multiplier."""
    mults = list(report.scales)
    examples = report.examples(name, mults[0], task).drop(columns=["correct", "answer_prob"])
    examples = examples.rename(columns={"steered": f"x{mults[0]:g}"})
    for m in mults[1:]:
        examples[f"x{m:g}"] = report.examples(name, m, task)["steered"]
    return examples


def headline_intro(report, keep: str = "numbers (unchanged)") -> str:
    """The paragraph above the headline table; the unsteered number-list accuracy is read, not assumed."""
    unsteered = float(report.extras["baseline_accuracy"][report._t(keep)])
    return ("Accuracy = the steered top-1 token is the number at the same index (\" four\" after "
            "\"January, February, March,\"). Effects are paired differences from the mean of the random "
            "vectors, 95% bootstrap intervals over prompts. Last column: accuracy on plain number lists "
            f"(steering should leave them intact; unsteered {unsteered:.2f}).")


def _md_table(frame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def write_summary(out, model, report, sweep, head, best, best_final, parts, number_side, examples, generations,
                  seconds, script: str = SMOLLM2.script, report_path: str = SMOLLM2.report) -> None:
    """``summary.md``: the tables and the plain statement of what was and was not found."""
    held, keep = "months -> numbers", "numbers (unchanged)"
    lines = [f"# Numbers-minus-months steering on {report.provenance.model_id}", "",
             f"Generated by `{script}` in {seconds:.0f} s "
             f"(tl_interp {report.provenance.version}). Full results: `report.safetensors` "
             "(`ti.results.Result.load`); figures: [figures.html](figures.html) (plotly from its CDN), or offline "
             f"in `{report_path}` after running the demo.", "",
             *([note, ""] if (note := weights_note([report.provenance.model_id])) else []),
             selection_text(sweep, report, head, best, held, keep), "",
             "## Headline: held-out month lists, against random vectors of the same norm", "",
             headline_intro(report, keep), "",
             "| vector | x | accuracy | random | effect [95% CI] | top-1 is a number | number lists kept |",
             "|---|---|---|---|---|---|---|"]
    by_key = {(h["vector"], _scale(h), h["metric"]): h for h in head}
    for name in [v for v in report.vectors if not v.startswith("random ~")]:
        for m in report.scales:
            a, t = by_key[(name, m, "accuracy")], by_key[(name, m, "on_target")]
            kept = float(report.values[report._v(name), report._m(m), report._t(keep)])
            lines.append(f"| {name} | {m:g} | {a['mean']:.2f} | {a['control_mean']:.2f} | {a['effect']:+.2f} "
                         f"[{a['ci_low']:+.2f}, {a['ci_high']:+.2f}] | {t['mean']:.2f} | {kept:.2f} |")
    for title, metric in (("Accuracy (every task)", "accuracy"), ("Top-1 is a number word (any)", "on_target"),
                          ("Logit of the expected number minus the unsteered answer's logit", "logit_diff")):
        lines += ["", f"<details><summary>{title}: full table with 95% intervals</summary>", "",
                  _md_table(report.table(metric)), "", "</details>"]
    lines += ["", f"## Per-prompt answers of {best_final['vector']} on held-out month lists, by multiplier", "",
              _md_table(examples), "",
              "## Greedy generations (mean-diff vector at the chosen layer)", "",
              "| prompt | multiplier | completion |", "|---|---|---|"]
    lines += [f"| {g['prompt']!r} | {g['scale']:g} | {g['completion']!r} |" for g in generations]
    lines += ["", f"## The residual vector at the SAE's layer in SAE features", "",
              f"{len(parts.features)} features explain {parts.explained:.1%} of its squared norm; "
              f"{len(number_side)} have positive (number-side) coefficients.", "",
              _md_table(parts.to_frame().round(4).head(12)), ""]
    (out / "summary.md").write_text("\n".join(lines))
    (out / "headline.json").write_text(json.dumps({"chosen": best, "comparisons": head},
                                                  indent=2))


def layer_figure(sweep):
    """Mean logit difference (expected number vs unsteered answer) on dev month lists, by layer."""
    import plotly.graph_objects as go

    layers = [int(v.split("L")[-1]) for v in sweep.vectors]
    values, (low, high) = sweep.extras["logit_diff"][:, :, 0], sweep._interval("logit_diff")
    fig = go.Figure()
    for k, m in enumerate(sweep.scales):
        fig.add_scatter(x=layers, y=values[:, k].tolist(), mode="lines+markers", name=f"x{m:g}",
                        error_y=dict(type="data", symmetric=False, array=(high[:, k, 0] - values[:, k]).tolist(),
                                     arrayminus=(values[:, k] - low[:, k, 0]).tolist()))
    fig.add_hline(y=float(sweep.extras["baseline_logit_diff"][0]), line_dash="dot", annotation_text="unsteered")
    fig.update_layout(xaxis_title="layer (resid_pre)", yaxis_title="logit diff vs unsteered answer",
                      title="Numbers-minus-months vector by layer, dev month lists")
    return fig


def figures(report, sweep) -> list[tuple[str, object]]:
    return [("Layer sweep on dev month lists", layer_figure(sweep)),
            ("Accuracy by task (each vector at its best multiplier)", report.figure("accuracy")),
            ("Top-1 is a number word", report.figure("on_target")),
            ("Months -> numbers: logit difference by multiplier", report.sweep_figure("months -> numbers", "logit_diff"))]


def write_figures(out: Path, report, sweep) -> None:
    """``figures.html``: the figures alone, loading plotly.js from its CDN (small enough to commit)."""
    parts = [f"<h2>{title}</h2>" + fig.to_html(full_html=False, include_plotlyjs="cdn" if i == 0 else False)
             for i, (title, fig) in enumerate(figures(report, sweep))]
    (out / "figures.html").write_text("<html><head><meta charset='utf-8'><title>Steering figures</title></head><body>"
                                      + "".join(parts) + "</body></html>")


def write_html(path: Path, report, sweep, head, examples, title: str = SMOLLM2.title) -> None:
    page = Report(f"Numbers-minus-months steering ({title})")
    for title, fig in figures(report, sweep):
        page.heading(title).figure(fig)
    frame = report.table("accuracy")
    page.heading("Accuracy table").table(list(frame.columns), frame.values.tolist())
    page.heading("Per-prompt answers").table(list(examples.columns), examples.values.tolist())
    page.write(path)


if __name__ == "__main__":
    report = main()

# %% [markdown]
# In a notebook the steering report displays itself: accuracy by task with 95% intervals for the
# unsteered model and each vector at its best scale, and the provenance.

# %%
if __name__ == "__main__":
    ti.viz.show(report)
