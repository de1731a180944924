# %% [markdown]
# # EAP-IG against the exact effect of patching one edge: where it converges, and where it can't
#
# Every edge score estimates one quantity, the change of the metric when one edge alone carries
# its corrupted value (`method="exact"`, computed here for every edge). EAP is a first-order
# Taylor expansion at the clean run; EAP-IG (over inputs) averages the gradient over `steps`
# points between the corrupted and the clean embeddings. As `steps` grows EAP-IG converges to
# an integral, and that integral is the exact single-edge effect only where the metric is close
# to linear in the receiver's input along the way.
#
# - A toy attention-only model without norms (`d_model` 32, 2 layers, 4 heads, seeded), whose only
#   non-linearity is the attention softmax, with its query weights scaled by 1, 0.3, 0.1 and 0.03:
#   the smaller the scale, the flatter the softmax and the closer the model to linear in its edges.
# - `induction-2l` (the zoo) on its induction task: a saturated, far-from-linear mechanism.
# - Error: `max |EAP-IG - exact| / max |exact|` over the graph's edges (scores are means over
#   prompts), and the rank correlation of the two scorings.
#
# Run: `python demos/circuits_eap_ig_convergence.py` (writes `results/circuits_eap_ig_convergence/`; seconds on CPU).

# %%
import argparse
import json
import sys
import time
from pathlib import Path

import torch

import tl_interp as ti
from tl_interp import circuits

sys.path.append(str(Path(__file__).resolve().parent))  # the induction task of the other circuits demo
from circuits_induction import induction_task  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCALES = (1.0, 0.3, 0.1, 0.03)


def toy_model(scale: float):
    """An attention-only, norm-free model whose query weights are scaled by ``scale``."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, n_ctx=16, d_vocab=61, attn_only=True,
                                  normalization_type=None, seed=0)
    model = HookedTransformer(cfg).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.attn.W_Q.mul_(scale)
    return model


def toy_task(n: int = 8, seq: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(1, 61, (n, seq), generator=g)
    corrupted = clean.clone()
    corrupted[:, 2:4] = torch.randint(1, 61, (n, 2), generator=g)
    return clean, corrupted, ti.metrics.logit_diff(3, 5)


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = a.argsort().argsort().double(), b.argsort().argsort().double()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def errors(model, clean, corrupted, metric, steps_list):
    """EAP's and EAP-IG's (per steps) max error relative to the largest exact score, and rank correlations."""
    exact = circuits.attribute(model, clean, corrupted, metric, method="exact", progress=False)
    scale = float(exact.scores.abs().max())
    row = {"exact_max": scale}
    eap = circuits.attribute(model, clean, corrupted, metric, method="eap", progress=False).scores
    row["eap"] = float((eap - exact.scores).abs().max()) / scale
    row["eap_rank"] = spearman(eap, exact.scores)
    for steps in steps_list:
        ig = circuits.attribute(model, clean, corrupted, metric, method="eap-ig-inputs", steps=steps,
                                progress=False).scores
        row[f"ig{steps}"] = float((ig - exact.scores).abs().max()) / scale
        row[f"ig{steps}_rank"] = spearman(ig, exact.scores)
    return row, exact


# %%
def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", default=str(ROOT / "results" / "circuits_eap_ig_convergence"))
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8, 16, 64])
    parser.add_argument("--prompts", type=int, default=24)
    args = parser.parse_args()
    start = time.time()
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for scale in SCALES:
        rows[f"toy (W_Q x {scale:g})"], _ = errors(toy_model(scale), *toy_task(), args.steps)
    model = ti.models.load("induction-2l")
    rows["induction-2l"], exact = errors(model, *induction_task(args.prompts, 8, seed=7), args.steps)
    return dict(rows=rows, exact=exact, steps=args.steps, out=out, seconds=time.time() - start)


def write_summary(run) -> dict:
    headline = {"seconds": round(run["seconds"]), "steps": run["steps"], "rows": run["rows"]}
    (run["out"] / "headline.json").write_text(json.dumps(headline, indent=2))
    (run["out"] / "summary.md").write_text(summary_text(headline))
    return headline


def summary_text(headline: dict) -> str:
    """The summary, a function of ``headline.json`` alone (a re-run writes the same words for the same numbers)."""
    rows, steps = headline["rows"], headline["steps"]
    lines = ["# EAP-IG against exact single-edge patching, as steps grow", "",
             f"Generated by `demos/circuits_eap_ig_convergence.py` in {headline['seconds']} s. Error: "
             "`max |score - exact| / max |exact|` over every edge of the graph (EAP-IG over inputs); in brackets "
             "the Spearman rank correlation with the exact scores.", "",
             "| model | EAP | " + " | ".join(f"EAP-IG {s} steps" for s in steps) + " |",
             "|---|---|" + "---|" * len(steps)]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['eap']:.2g} ({r['eap_rank']:.2f}) | "
                     + " | ".join(f"{r[f'ig{s}']:.2g} ({r[f'ig{s}_rank']:.2f})" for s in steps) + " |")
    toy = [rows[f"toy (W_Q x {s:g})"][f"ig{steps[-1]}"] for s in SCALES]
    falls = all(all(r[f"ig{a}"] >= r[f"ig{b}"] for a, b in zip(steps, steps[1:]))
                for name, r in rows.items() if name.startswith("toy"))
    eap_closer = [name for name, r in rows.items() if r["eap"] < r[f"ig{steps[-1]}"]]
    ind = rows["induction-2l"]
    lines += ["", "## Found", "",
              f"- On the toy model EAP-IG's error {'falls' if falls else 'does not always fall'} as steps grow at "
              f"every scale, and with {steps[-1]} steps it falls with the scale ({', '.join(f'{e:.2g}' for e in toy)} "
              f"for W_Q x {', '.join(f'{s:g}' for s in SCALES)}): as the model nears linearity, EAP-IG converges to "
              "the exact single-edge effect (`tests/test_circuits.py::test_eap_ig_approaches_the_exact_single_edge_"
              "effect_as_steps_grow_and_the_model_nears_linearity` asserts both orders).",
              f"- As an estimate of one edge's effect, EAP is closer than EAP-IG in {len(eap_closer)} of {len(rows)} "
              "rows (" + "; ".join(eap_closer) + "). Patching one edge is a perturbation of the clean run, where EAP "
              "takes its gradient; EAP-IG averages gradients along a path on which *every* input moves from "
              "corrupted to clean at once, far from the clean run. Its published advantage is in the faithfulness of "
              "the circuits it selects (MIB's CPR / CMD), which `faithfulness_curve` measures, not in single-edge "
              "estimates.",
              f"- On induction-2l more steps do not close the gap (EAP-IG error {ind['ig1']:.2g} at 1 step, "
              f"{ind[f'ig{steps[-1]}']:.2g} at {steps[-1]}; EAP {ind['eap']:.2g}): in a saturated mechanism neither "
              "first-order estimate is the effect of one edge alone. The rankings agree better than the values "
              f"(rank correlation {ind[f'ig{steps[-1]}_rank']:.2f} for EAP-IG, {ind['eap_rank']:.2f} for EAP); the "
              "exact faithfulness of the circuits is what says how much they carry.", "",
              "## Not found / caveats", "",
              "- Convergence is shown for EAP-IG over inputs; EAP-IG over activations integrates one layer's outputs "
              "at a time and is checked against its definition in `tests/test_circuits_methods.py`, not here.",
              "- The toy model is random: its edges have no mechanism, only a known degree of non-linearity.", "",
              "Files: `headline.json` (every number in the table)."]
    return "\n".join(lines) + "\n"


# %%
if __name__ == "__main__":
    run = main()
    write_summary(run)
    print((run["out"] / "summary.md").read_text())

# %% [markdown]
# The exact single-edge scores of induction-2l that the estimates are measured against:

# %%
if __name__ == "__main__":
    ti.viz.show(run["exact"])
