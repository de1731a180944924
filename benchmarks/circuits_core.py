"""Benchmark: ti.circuits' edge scores and batched faithfulness vs the loops they replace.

Measured in one run, on ordinal-4l (months lists, "january , february , march ," -> "april",
corrupted by reordering the months) and, unless --skip-real, on SmolLM2-135M (the months task):
  (a) EAP, EAP-IG-inputs and EAP-IG-activations (5 steps) against one clean forward + backward
      (the bound);
  (b) ordinal-4l only (SmolLM2 has ~123k edges): exact single-edge patching of every edge,
      batched on the engine, against a loop of one hand-hooked forward per edge (the
      reference's get_scores_exact), with the max |diff|;
  (c) faithfulness of 10 budgets x 3 methods (30 circuits, top-k edges by |score|) batched,
      against a loop that patches every edge outside each circuit by hand (on SmolLM2: 2
      circuits, extrapolated), with the max |diff|.
Peak memory is the process's max resident set size.

Run: python benchmarks/circuits_core.py [--skip-real] [--repeats N]
"""

import argparse
import resource
import sys
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tl_interp as ti  # noqa: E402
from _timing import timed  # noqa: E402
from tests import _circuits_reference as ref  # noqa: E402

BUDGETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(label, model, clean, corrupted, correct, incorrect, repeats, exact=True):
    metric = ti.metrics.logit_diff(correct, incorrect)
    batch = ti.models.adapt(model).tokenize(clean)
    bad = ti.models.adapt(model).tokenize(corrupted)
    tokens, mask = batch.tokens, batch.attention_mask if batch.padded else None
    rows = torch.arange(len(clean))

    def per_prompt(logits):
        last = logits[rows, batch.last_index]
        return last[rows, correct] - last[rows, incorrect]

    def bound():
        logits = model(tokens, **({} if mask is None else {"attention_mask": mask}))
        per_prompt(logits).sum().backward()
        model.zero_grad(set_to_none=True)

    (w_fb, c_fb), _ = timed(bound, repeats)
    print(f"[{label}] one forward + backward: {w_fb:.3f}s wall / {c_fb:.3f}s CPU")
    scores = {}
    for method in ("eap", "eap-ig-inputs", "eap-ig-activations"):
        (w, c), s = timed(lambda: ti.circuits.attribute(model, batch, bad, metric, method=method, steps=5,
                                                        progress=False), repeats)
        scores[method] = s
        print(f"[{label}] {method}: {w:.3f}s wall / {c:.3f}s CPU = {w / w_fb:.1f}x wall, {c / c_fb:.1f}x CPU "
              f"the forward+backward bound ({len(s.names)} edges)")
    names = scores["eap"].names
    if exact:
        (w_exact, _), ex = timed(lambda: ti.circuits.attribute(model, batch, bad, metric, method="exact",
                                                               progress=False), 1)
        (w_loop, _), by_hand = timed(lambda: ref.single_edges(model, tokens, bad.tokens, per_prompt, names, mask), 1)
        diff = float((ex.per_prompt - by_hand).abs().max())
        print(f"[{label}] exact, every edge: batched {w_exact:.2f}s ({ex.provenance.settings['passes']} passes) vs "
              f"one forward per edge {w_loop:.2f}s: {w_loop / w_exact:.1f}x; max |diff| {diff:.1e}")
    circuits = []
    for method in scores:
        order = scores[method].scores.abs().argsort(descending=True).tolist()
        for b in BUDGETS:
            k = max(1, round(b * len(order)))
            circuits.append([names[i] for i in order[:k]])
    (w_f, _), f = timed(lambda: ti.circuits.faithfulness(model, circuits, batch, bad, metric, progress=False), 1)
    g = ti.circuits.graph(model)
    with ref.flags(model), torch.no_grad():
        _, cache = model.run_with_cache(bad.tokens, **({} if mask is None else {"attention_mask": mask}))
    n_loop = len(circuits) if exact else 2
    (w_fl, _), hand = timed(lambda: torch.stack([ref.circuit_values(model, tokens, cache, per_prompt, g.edges, c, mask)
                                                 for c in circuits[:n_loop]]), 1)
    w_fl_all = w_fl * len(circuits) / n_loop
    diff = float((f.values[:n_loop] - hand).abs().max())
    print(f"[{label}] faithfulness of {len(circuits)} circuits (10 budgets x 3 methods): batched {w_f:.2f}s "
          f"({f.provenance.settings['passes']} passes) vs by hand {w_fl_all:.2f}s"
          f"{' (extrapolated from ' + str(n_loop) + ')' if n_loop < len(circuits) else ''}: "
          f"{w_fl_all / w_f:.1f}x; max |diff| {diff:.1e}")
    for i, method in enumerate(scores):
        print(f"[{label}] f of {method} circuits at budgets {BUDGETS}: "
              + ", ".join(f"{v:.2f}" for v in f.normalized[10 * i:10 * i + 10].tolist()))
    print(f"[{label}] peak RSS {_peak_mb():.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    model = ti.models.load("ordinal-4l")
    tok = ti.models.adapt(model)
    months = "january february march april may june july august september october november december".split()
    clean = [" , ".join(months[i:i + 3]) + " ," for i in range(8)]
    corrupted = [" , ".join([months[i + 2], months[i], months[i + 1]]) + " ," for i in range(8)]
    ids = lambda ws: torch.tensor([int(tok.tokenize(w, prepend_bos=False).tokens[0, 0]) for w in ws])  # noqa: E731
    run("ordinal-4l", model, clean, corrupted, ids(months[3:11]), ids(months[2:10]), args.repeats)
    if not args.skip_real:
        model = ti.models.load("smollm2-135m")
        tok = ti.models.adapt(model)
        caps = [m.capitalize() for m in months]
        clean = [", ".join(caps[i:i + 3]) + "," for i in range(4)]
        corrupted = [", ".join([caps[i + 2], caps[i], caps[i + 1]]) + "," for i in range(4)]
        ids = lambda ws: torch.tensor([int(tok.tokenize(" " + w, prepend_bos=False).tokens[0, 0]) for w in ws])  # noqa: E731
        run("smollm2-135m", model, clean, corrupted, ids(caps[3:7]), ids(caps[2:6]), 1, exact=False)


if __name__ == "__main__":
    main()
