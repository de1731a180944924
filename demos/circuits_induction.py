# %% [markdown]
# # The induction circuit of `induction-2l`, found by edge attribution and checked exactly
#
# `induction-2l` (the zoo) is a two-layer attention-only transformer whose mechanism is known
# (its model card): three redundant previous-token heads in layer 0 (L0 H0-H2) and one
# induction head in layer 1 (L1 H2) that finds the previous token through its *key* input
# (K-composition). Can edge attribution find that circuit without being told, and how much of
# the behaviour does the circuit it finds carry when checked exactly?
#
# - Task: `BOS + r + r[:-1]` (a random sequence, then its repeat up to the last token); the
#   answer is `r[-1]`. Corrupted: the first half replaced by another random sequence `s`, so
#   nothing can be copied. Metric: logit difference `r[-1]` minus `s[-1]` at the last position.
# - Scores of every edge of the graph (52 edges): EAP, EAP-IG (inputs, 5 steps) and exact
#   single-edge patching (`ti.circuits.attribute`), with their stability over resampled prompts.
# - A small circuit (greedy from EAP-IG, connected from `input` to `logits`) and MIB's
#   faithfulness curve of all three methods, evaluated exactly, with bootstrap intervals.
#
# Run: `python demos/circuits_induction.py` (writes `results/circuits_induction/`; ~1 minute on CPU).

# %%
import argparse
import json
import time
from pathlib import Path

import torch

import tl_interp as ti
from tl_interp import circuits
from tl_interp.circuits import Circuit, faithfulness_curve, stability
from tl_interp.models.zoo.induction import BOS_TOKEN, N_RANDOM_TOKENS

ROOT = Path(__file__).resolve().parents[1]
PREVIOUS_TOKEN_HEADS, INDUCTION_HEAD = ("a0.h0", "a0.h1", "a0.h2"), "a1.h2"


def induction_task(n: int, half: int, seed: int):
    """Clean ``BOS + r + r[:-1]`` and corrupted ``BOS + s + r[:-1]``, the metric ``r[-1] - s[-1]``."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randint(1, N_RANDOM_TOKENS + 1, (n, half), generator=g)
    s = torch.randint(1, N_RANDOM_TOKENS + 1, (n, half), generator=g)
    bos = torch.full((n, 1), BOS_TOKEN)
    clean = torch.cat([bos, r, r[:, :-1]], dim=1)
    corrupted = torch.cat([bos, s, r[:, :-1]], dim=1)
    return clean, corrupted, ti.metrics.logit_diff(r[:, -1], s[:, -1])


# %%
def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", default=str(ROOT / "results" / "circuits_induction"))
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--half", type=int, default=12)
    parser.add_argument("--circuit-edges", type=int, default=8)
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args()
    start = time.time()
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = ti.models.load("induction-2l")
    clean, corrupted, metric = induction_task(args.prompts, args.half, seed=7)

    scores = {m: circuits.attribute(model, clean, corrupted, metric, method=m, steps=5, progress=False)
              for m in ("eap", "eap-ig-inputs", "exact")}
    stable = {m: stability(s, k=[3, args.circuit_edges], n_boot=500) for m, s in scores.items()}
    circuit = Circuit.greedy(scores["eap-ig-inputs"], args.circuit_edges)
    check = circuits.faithfulness(model, clean, corrupted, [circuit], metric, progress=False)
    curve = faithfulness_curve(model, clean, corrupted, list(scores.values()), metric, n_boot=args.n_boot,
                               progress=False)
    return dict(model=model, scores=scores, stable=stable, circuit=circuit, check=check, curve=curve, out=out,
                seconds=time.time() - start, args=args)


# %%
def circuit_numbers(check, n_boot: int = 1000):
    """f of the one circuit (ratio of means) with a bootstrap interval, and its raw means."""
    values = check.values.double()[0]
    clean, corrupted = check.extras["clean"].double(), check.extras["corrupted"].double()
    f = circuits.circuit_intervals(check, n_boot=n_boot, seed=0)
    return {"f": float(f["f"][0]), "f_low": float(f["f_low"][0]), "f_high": float(f["f_high"][0]),
            "circuit": float(values.mean()), "clean": float(clean.mean()), "corrupted": float(corrupted.mean())}


def rank_of(scores, edge: str) -> int:
    order = scores.scores.abs().argsort(descending=True).tolist()
    return 1 + order.index(scores.names.index(edge))


def write_summary(run) -> dict:
    out, scores, curve, circuit = run["out"], run["scores"], run["curve"], run["circuit"]
    k_edges = [f"{p}->{INDUCTION_HEAD}<k>" for p in PREVIOUS_TOKEN_HEADS]
    numbers = circuit_numbers(run["check"])
    headline = {
        "model": "induction-2l", "prompts": int(run["args"].prompts), "graph_edges": len(scores["eap"].names),
        "circuit": {"builder": "greedy on eap-ig-inputs", "edges": list(circuit.edges), **numbers},
        "k_composition_ranks": {m: {e: rank_of(s, e) for e in k_edges} for m, s in scores.items()},
        "top_edges": {m: [[n, v] for n, v in s.top(5)] for m, s in scores.items()},
        "cpr": dict(zip(curve.methods, curve.cpr.tolist())), "cmd": dict(zip(curve.methods, curve.cmd.tolist())),
        "survival_top3": {m: float(st.survival[0]) for m, st in run["stable"].items()},
    }
    (out / "headline.json").write_text(json.dumps(headline, indent=2))
    circuit.to_json(out / "circuit.json", d_model=run["model"].cfg.d_model)
    curve.save(out / "curve.safetensors")
    lines = [
        "# The induction circuit of induction-2l, by edge attribution, checked exactly", "",
        f"Generated by `demos/circuits_induction.py` in {run['seconds']:.0f} s. {run['args'].prompts} prompts "
        f"`BOS + r + r[:-1]` (half length {run['args'].half}), corrupted first half; metric: logit difference of "
        f"`r[-1]` against `s[-1]`. Clean {numbers['clean']:.2f}, corrupted {numbers['corrupted']:.2f}.", "",
        "## Found", "",
        f"- **K-composition ranks high.** The edges from the previous-token heads into the induction head's key "
        f"input rank (of {headline['graph_edges']} edges):", ""]
    lines += ["| method | " + " | ".join(k_edges) + " | top edge |", "|---|" + "---|" * (len(k_edges) + 1)]
    for m, s in scores.items():
        ranks = headline["k_composition_ranks"][m]
        lines.append(f"| {m} | " + " | ".join(str(ranks[e]) for e in k_edges) + f" | `{s.top(1)[0][0]}` |")
    lines += ["", f"- **A {len(circuit)}-edge circuit** (greedy on EAP-IG, connected input -> logits): "
              f"`{', '.join(circuit.edges)}`. Exact faithfulness (every other edge carries its corrupted value): "
              f"**f = {numbers['f']:.3f}** [95% CI {numbers['f_low']:.3f}, {numbers['f_high']:.3f}] "
              f"(metric {numbers['circuit']:.2f} of clean {numbers['clean']:.2f}, corrupted {numbers['corrupted']:.2f}).",
              "", "## MIB faithfulness curve (exact, all budgets x methods in one batched call)", "",
              "| method | CPR (higher better) [95% CI] | CMD (lower better) [95% CI] | " +
              " | ".join(curve.labels["budget"]) + " |", "|---|---|---|" + "---|" * len(curve.budgets)]
    e = curve.extras
    for i, m in enumerate(curve.methods):
        lines.append(f"| {m} | {float(e['cpr'][i]):.3f} [{float(e['cpr_low'][i]):.3f}, {float(e['cpr_high'][i]):.3f}] | "
                     f"{float(e['cmd'][i]):.3f} [{float(e['cmd_low'][i]):.3f}, {float(e['cmd_high'][i]):.3f}] | "
                     + " | ".join(f"{v:.2f}" for v in curve.values[i].tolist()) + " |")
    reach = []
    for i, m in enumerate(curve.methods):
        hit = [b for b, v in zip(curve.labels["budget"], curve.values[i].tolist()) if v >= 0.9]
        reach.append(f"{m} at {hit[0]} ({int(e['n_requested'][curve.labels['budget'].index(hit[0])])} edges)"
                     if hit else f"{m} never")
    lines += ["", "Smallest budget whose top-n circuit reaches f >= 0.9: " + "; ".join(reach) + f". The greedy "
              f"circuit above reaches f = {numbers['f']:.2f} with {len(circuit)} edges: at tiny budgets, keeping the "
              "circuit connected from input to logits matters more than the ranking."]
    lines += ["", "Edges per budget (`int(b * N)`, before pruning): " +
              ", ".join(str(int(n)) for n in e["n_requested"].tolist()) +
              ". With 52 edges the budgets below 2% hold no edge, so f is 0 there for every method.", "",
              "## Stability over resampled prompts", "",
              f"| method | top-3 survival [95% CI] | top-{run['args'].circuit_edges} survival [95% CI] |", "|---|---|---|"]
    for m, st in run["stable"].items():
        s, lo, hi = st.survival.tolist(), st.extras["survival_low"].tolist(), st.extras["survival_high"].tolist()
        lines.append(f"| {m} | {s[0]:.2f} [{lo[0]:.2f}, {hi[0]:.2f}] | {s[1]:.2f} [{lo[1]:.2f}, {hi[1]:.2f}] |")
    lines += ["", "## Not found / caveats", "",
              "- The three previous-token heads are redundant (the model card: removing any one costs < 0.02 nats), so "
              "single-edge scores, exact ones included, cannot say that all three matter together; only circuits "
              "evaluated as a whole do.",
              "- Scores are means over prompts of one task distribution (half length %d); a different length or "
              "corruption can rank edges differently." % run["args"].half,
              "", "Files: `headline.json`, `circuit.json` (MIB circuit file), `curve.safetensors` "
              "(`ti.results.Result.load`)."]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return headline


# %%
if __name__ == "__main__":
    run = main()
    headline = write_summary(run)
    print(json.dumps({k: headline[k] for k in ("circuit", "cpr", "cmd")}, indent=1))

# %% [markdown]
# The circuit (edge width by |EAP-IG score|, blue positive, red negative) and the curve:

# %%
if __name__ == "__main__":
    ti.viz.show(run["circuit"])
    ti.viz.show(run["curve"])
