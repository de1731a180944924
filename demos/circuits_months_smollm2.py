# %% [markdown]
# # Which edges make SmolLM2-135M say " April" after "January, February, March,"?
#
# The months task on the real SmolLM2-135M-Instruct: three consecutive months, then the
# fourth. Corrupted run: the same template starting six months later ("July, August,
# September," -> " October"), so the metric, the logit difference between the clean answer
# and the corrupted one at the last position, swings from clearly positive to clearly negative.
#
# - Every edge of the graph (30 layers x 9 heads + 30 MLPs: ~1.2e5 edges) is scored by EAP
#   and EAP-IG (inputs, 5 steps), and by EAP-IG over activations (5 steps) unless `--quick`;
#   exact single-edge patching of every edge is out of reach on a CPU (one pass per edge).
# - MIB's faithfulness curve of every method (10 budgets, every circuit evaluated exactly, in
#   one batched call), with bootstrap intervals and top-edge survival over resampled prompts.
# - A small circuit (greedy on EAP-IG, connected from `input` to `logits`), checked exactly.
#
# Run: `python demos/circuits_months_smollm2.py` (writes `results/circuits_months_smollm2/`;
# several minutes on CPU).

# %%
import argparse
import json
import time
from pathlib import Path

import torch

import tl_interp as ti
from tl_interp import circuits
from tl_interp.circuits import Circuit, faithfulness_curve, stability

ROOT = Path(__file__).resolve().parents[1]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]


def months_task(model, starts):
    """Clean lists from each start, corrupted lists six months later; logit diff of the two answers."""
    prompt = lambda i: ", ".join(MONTHS[(i + k) % 12] for k in range(3)) + ","  # noqa: E731
    clean = model.to_tokens([prompt(i) for i in starts])
    corrupted = model.to_tokens([prompt(i + 6) for i in starts])
    if clean.shape != corrupted.shape:
        raise SystemExit("clean and corrupted prompts must have one token length")
    answer = lambda i: model.to_single_token(" " + MONTHS[(i + 3) % 12])  # noqa: E731
    correct = torch.tensor([answer(i) for i in starts])
    wrong = torch.tensor([answer(i + 6) for i in starts])
    return clean, corrupted, ti.metrics.logit_diff(correct, wrong)


# %%
def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", default=str(ROOT / "results" / "circuits_months_smollm2"))
    parser.add_argument("--circuit-edges", type=int, default=60)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--prompts", type=int, default=12, help="how many start months (1-12; the test uses fewer)")
    parser.add_argument("--quick", action="store_true", help="EAP and EAP-IG over inputs only (EAP-IG over "
                        "activations is (1 + 2 x 30) x 5 runs with gradients)")
    args = parser.parse_args()
    start = time.time()
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    model = ti.models.load("smollm2-135m")
    clean, corrupted, metric = months_task(model, range(args.prompts))
    methods = ("eap", "eap-ig-inputs") if args.quick else ("eap", "eap-ig-inputs", "eap-ig-activations")
    scores, seconds = {}, {}
    for m in methods:
        t = time.time()
        scores[m] = circuits.attribute(model, clean, corrupted, metric, method=m, steps=5, progress=False)
        seconds[m] = time.time() - t
    n_boot = args.n_boot
    stable = {m: stability(s, k=[10, args.circuit_edges], n_boot=200) for m, s in scores.items()}
    circuit = Circuit.greedy(scores["eap-ig-inputs"], args.circuit_edges)
    check = circuits.faithfulness(model, clean, corrupted, [circuit], metric, progress=False)
    t = time.time()
    curve = faithfulness_curve(model, clean, corrupted, list(scores.values()), metric, n_boot=n_boot, progress=False)
    seconds["curve"] = time.time() - t
    return dict(model=model, scores=scores, stable=stable, circuit=circuit, check=check, curve=curve, out=out,
                seconds=time.time() - start, method_seconds=seconds, args=args)


# %%
def write_summary(run) -> dict:
    from circuits_induction import circuit_numbers

    out, scores, curve, circuit = run["out"], run["scores"], run["curve"], run["circuit"]
    numbers = circuit_numbers(run["check"])
    nodes = [n for n in circuit.nodes if n not in ("input", "logits")]
    headline = {
        "model": "smollm2-135m", "prompts": run["args"].prompts, "graph_edges": len(scores["eap"].names),
        "circuit": {"builder": "greedy on eap-ig-inputs", "n_edges": len(circuit), "nodes": nodes,
                    "edges": list(circuit.edges), **numbers},
        "top_edges": {m: [[n, v] for n, v in s.top(10)] for m, s in scores.items()},
        "cpr": dict(zip(curve.methods, curve.cpr.tolist())), "cmd": dict(zip(curve.methods, curve.cmd.tolist())),
        "f": {m: dict(zip(curve.labels["budget"], curve.values[i].tolist())) for i, m in enumerate(curve.methods)},
        "survival_top10": {m: float(st.survival[0]) for m, st in run["stable"].items()},
        "seconds": run["method_seconds"],
    }
    (out / "headline.json").write_text(json.dumps(headline, indent=2))
    circuit.to_json(out / "circuit.json", d_model=run["model"].cfg.d_model)
    curve.save(out / "curve.safetensors")
    e = curve.extras
    agree = {m: len(set(n for n, _ in scores[m].top(10)) & set(n for n, _ in scores["eap-ig-inputs"].top(10)))
             for m in scores}
    lines = [
        "# Which edges make SmolLM2-135M say \" April\" after \"January, February, March,\"?", "",
        f"Generated by `demos/circuits_months_smollm2.py` in {run['seconds']:.0f} s (scoring: "
        + ", ".join(f"{m} {s:.0f} s" for m, s in run["method_seconds"].items()) + f"). {headline['prompts']} prompts (one per start "
        f"month), corrupted run six months later; metric: logit difference clean answer minus corrupted answer. "
        f"Clean {numbers['clean']:.2f}, corrupted {numbers['corrupted']:.2f}. Graph: {headline['graph_edges']} edges.", "",
        "## Found", "",
        "MIB faithfulness curve (every circuit evaluated exactly; 95% bootstrap intervals over prompts):", "",
        "| method | CPR (higher better) [95% CI] | CMD (lower better) [95% CI] | " + " | ".join(curve.labels["budget"])
        + " |", "|---|---|---|" + "---|" * len(curve.budgets)]
    for i, m in enumerate(curve.methods):
        lines.append(f"| {m} | {float(e['cpr'][i]):.3f} [{float(e['cpr_low'][i]):.3f}, {float(e['cpr_high'][i]):.3f}] | "
                     f"{float(e['cmd'][i]):.3f} [{float(e['cmd_low'][i]):.3f}, {float(e['cmd_high'][i]):.3f}] | "
                     + " | ".join(f"{v:.2f}" for v in curve.values[i].tolist()) + " |")
    lines += ["", f"Top-edge survival when the {headline['prompts']} prompts are resampled (fraction of each budget's top edges still in "
              "the top):", "", "| method | " + " | ".join(curve.labels["budget"]) + " |",
              "|---|" + "---|" * len(curve.budgets)]
    for i, m in enumerate(curve.methods):
        lines.append(f"| {m} | " + " | ".join(f"{v:.2f}" for v in e["survival"][i].tolist()) + " |")
    lines += ["", f"A {len(circuit)}-edge circuit (greedy on EAP-IG from {run['args'].circuit_edges} edges, pruned): "
              f"exact **f = {numbers['f']:.3f}** [95% CI {numbers['f_low']:.3f}, {numbers['f_high']:.3f}] (metric "
              f"{numbers['circuit']:.2f}; clean {numbers['clean']:.2f}, corrupted {numbers['corrupted']:.2f}). Its "
              f"components: {', '.join(f'`{n}`' for n in nodes)}.", "",
              "Top edges by |score| (overlap of each method's top 10 with EAP-IG's: "
              + ", ".join(f"{m} {k}/10" for m, k in agree.items()) + "):", "",
              "| rank | " + " | ".join(scores) + " |", "|---|" + "---|" * len(scores)]
    tops = {m: s.top(10) for m, s in scores.items()}
    for r in range(10):
        lines.append(f"| {r + 1} | " + " | ".join(f"`{tops[m][r][0]}` {tops[m][r][1]:+.3f}" for m in scores) + " |")
    lines += ["", "## Not found / caveats", "",
              "- Exact single-edge scores (the quantity the others approximate) were not computed: one patched pass "
              "per edge for ~1.2e5 edges is hours on a CPU; the exact check here is of circuits, not of edges.",
              f"- {headline['prompts']} prompts is a small sample: the survival row says how much of each circuit's membership would "
              "change with another sample of prompts, and the intervals on f are wide where it does.",
              "- The circuit explains the logit difference on this template; it is not shown to be the mechanism of "
              "month succession in general (other templates, other list lengths).",
              "", "Files: `headline.json`, `circuit.json` (MIB circuit file), `curve.safetensors` "
              "(`ti.results.Result.load`)."]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return headline


# %%
if __name__ == "__main__":
    run = main()
    headline = write_summary(run)
    print(json.dumps({k: headline[k] for k in ("cpr", "cmd", "survival_top10")}, indent=1))

# %% [markdown]
# The faithfulness curve, and the circuit:

# %%
if __name__ == "__main__":
    ti.viz.show(run["curve"])
    ti.viz.show(run["circuit"])
