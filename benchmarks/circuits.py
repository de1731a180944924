"""Benchmark: edge attribution and exact circuit evaluation (``ti.circuits``), in one run.

Each number is measured against its reference in the same run:

1. EAP and EAP-IG (inputs, 5 steps) against one forward + backward of the model on the same
   batch (parameters frozen, gradients to the activations only): the bound a gradient method
   cannot beat;
2. exact single-edge patching (``attribute(method="exact")``, many edges per stacked pass)
   against a loop with one forward pass per edge (``_circuit_loop.edge_forward``: the senders'
   outputs read once, then one ``run_with_hooks`` per edge with one hook at its receiver's input,
   per-head inputs switched on only for edges into heads); the max |difference| is printed;
3. exact faithfulness of MIB's 10 budgets x 3 methods (30 circuits, one ``faithfulness`` call)
   against two loops: one forward per circuit with the corrupted run done once, and the
   reference's ``evaluate_graph`` (a corrupted and a patched forward per circuit);
4. the process's peak resident memory after each step (``ru_maxrss``: a running maximum).

Cases: ``ordinal-4l`` (months continuation, 8 prompts) and SmolLM2-135M (the months task,
" April" after three months against a corrupted list; ``--skip-real`` skips it). On SmolLM2
the single-edge loop runs over a sample of edges and is extrapolated to every edge, the batched
exact scoring of all ~1.2e5 edges is left out unless ``--exact-real`` (hours on CPU), and the
third set of circuits ranks EAP's scores by signed value (MIB's CPR selection) instead.

Run: python benchmarks/circuits.py [--skip-real | --skip-zoo] [--exact-real] [--repeats N] [--threads N]
"""

import argparse
import resource
import time
import warnings

import torch

warnings.filterwarnings("ignore")

import tl_interp as ti  # noqa: E402
from _circuit_loop import circuit_forward, edge_forward, per_head_inputs, sender_outputs  # noqa: E402
from _timing import timed  # noqa: E402
from tl_interp import circuits  # noqa: E402
from tl_interp.circuits._circuit import Circuit  # noqa: E402
from tl_interp.circuits._curve import MIB_BUDGETS  # noqa: E402

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def months_case(model, *, lower: bool, n: int = 8):
    """Clean: three consecutive months -> the fourth; corrupted: three months starting six later."""
    names = [m.lower() for m in MONTHS] if lower else MONTHS
    sep = " , " if lower else ", "

    def prompt(i):
        return sep.join(names[(i + k) % 12] for k in range(3)) + sep.rstrip()

    def answer(i):
        return (" " if not lower else "") + names[(i + 3) % 12]

    clean = model.to_tokens([prompt(i) for i in range(n)])
    corrupted = model.to_tokens([prompt(i + 6) for i in range(n)])
    ids = lambda words: torch.tensor([model.to_single_token(w) for w in words])  # noqa: E731
    correct, wrong = ids([answer(i) for i in range(n)]), ids([answer(i + 6) for i in range(n)])
    if clean.shape != corrupted.shape:
        raise SystemExit("clean and corrupted prompts must tokenize to one length")
    return clean, corrupted, ti.metrics.logit_diff(correct, wrong), (correct, wrong)


def bound(model, clean, answers):
    """One forward + backward to the embeddings (parameters frozen)."""
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    correct, wrong = answers
    rows = torch.arange(clean.shape[0])

    def run():
        with torch.enable_grad():
            def leaf(act, hook):
                act.requires_grad_(True)
                return act
            logits = model.run_with_hooks(clean, fwd_hooks=[("hook_embed", leaf)])
            (logits[rows, -1, correct] - logits[rows, -1, wrong]).sum().backward()
    try:
        return timed(run, 3)[0]
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)


def run_case(label, model, clean, corrupted, metric, answers, *, repeats, exact, loop_sample=None):
    correct, wrong = answers
    rows = torch.arange(clean.shape[0])
    score = lambda logits: logits[rows, -1, correct] - logits[rows, -1, wrong]  # noqa: E731
    g = circuits.graph(model)
    print(f"[{label}] {len(g.edges)} edges, {clean.shape[0]} prompts x {clean.shape[1]} tokens; peak {peak_mb():.0f} MB")
    (w_b, c_b) = bound(model, clean, answers)
    print(f"[{label}] bound: one forward + backward {w_b:.3f}s wall / {c_b:.3f}s CPU")
    scores = {}
    for method, kw in (("eap", {}), ("eap-ig-inputs", {"steps": 5})):
        (w, c), scores[method] = timed(lambda: circuits.attribute(model, clean, corrupted, metric, method=method,
                                                                  progress=False, **kw), repeats)
        print(f"[{label}] {method}{' (5 steps)' if kw else ''}: {w:.3f}s wall / {c:.3f}s CPU = {w / w_b:.1f}x the bound "
              f"(wall), {c / c_b:.1f}x (CPU); peak {peak_mb():.0f} MB")

    with per_head_inputs(model):
        clean_s, ablated = sender_outputs(model, g, clean), sender_outputs(model, g, corrupted)
    deltas = ablated - clean_s
    with torch.no_grad():
        clean_base = score(model(clean))

    def loop_edges(indices):
        with per_head_inputs(model, split_qkv=False):
            return torch.stack([score(edge_forward(model, g, clean, deltas, i)).mean() - clean_base.mean()
                                for i in indices])

    sample = list(range(len(g.edges))) if loop_sample is None else torch.randperm(
        len(g.edges), generator=torch.Generator().manual_seed(0))[:loop_sample].tolist()
    (w_loop, c_loop), looped = timed(lambda: loop_edges(sample), 1)
    scale = len(g.edges) / len(sample)
    what = "every edge" if loop_sample is None else f"{len(sample)} sampled edges, x{scale:.0f} for all"
    print(f"[{label}] single-edge loop ({what}): {w_loop * scale:.2f}s wall / {c_loop * scale:.2f}s CPU")
    if exact:
        (w_ex, c_ex), scores["exact"] = timed(lambda: circuits.attribute(model, clean, corrupted, metric,
                                                                         method="exact", progress=False), 1)
        diff = (scores["exact"].scores[sample].double() - looped.double()).abs().max().item()
        print(f"[{label}] exact batched: {w_ex:.2f}s wall / {c_ex:.2f}s CPU; speed-up {w_loop * scale / w_ex:.1f}x wall, "
              f"{c_loop * scale / c_ex:.1f}x CPU (goal >= 10x); max |diff| vs loop {diff:.1e}; peak {peak_mb():.0f} MB")
    else:
        print(f"[{label}] exact batched over all edges skipped (--exact-real: hours on CPU); the third set of "
              "circuits ranks EAP's scores by signed value (MIB's CPR selection)")

    budgets = [int(b * len(g.edges)) for b in MIB_BUDGETS]
    selections = [(s, True) for s in scores.values()] + ([] if exact else [(scores["eap"], False)])
    circuit_list = [Circuit.top(s, n, absolute=a) for s, a in selections for n in budgets]
    (w_f, c_f), result = timed(lambda: circuits.faithfulness(model, circuit_list, clean, corrupted, metric,
                                                            progress=False), repeats)

    masks = [torch.tensor([e in edges for e in g.edges]) for edges in (frozenset(c.edges) for c in circuit_list)]

    def loop_circuits(as_reference: bool):
        # as_reference: the reference's evaluate_graph runs the corrupted prompts again for every circuit
        with per_head_inputs(model):
            source = sender_outputs(model, g, corrupted)
            return torch.stack([score(circuit_forward(model, g, clean, sender_outputs(model, g, corrupted)
                                                      if as_reference else source, m)) for m in masks])

    print(f"[{label}] faithfulness of {len(circuit_list)} circuits (10 budgets x {len(selections)} methods), batched: "
          f"{w_f:.2f}s wall / {c_f:.2f}s CPU; peak {peak_mb():.0f} MB")
    for name, flag in (("one forward per circuit, corrupted run once", False),
                       ("the reference's evaluate_graph (corrupted + patched forward per circuit)", True)):
        (w_fl, c_fl), looped_f = timed(lambda: loop_circuits(flag), 1)
        diff = (result.values.double() - looped_f.double()).abs().max().item()
        print(f"[{label}]   vs loop, {name}: {w_fl:.2f}s wall / {c_fl:.2f}s CPU; speed-up {w_fl / w_f:.1f}x wall, "
              f"{c_fl / c_f:.1f}x CPU (goal >= 5x); max |diff| {diff:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--skip-zoo", action="store_true", help="SmolLM2 only")
    parser.add_argument("--exact-real", action="store_true", help="batched exact scoring of every SmolLM2 edge (hours)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps timings steady)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if not args.skip_zoo:
        model = ti.models.load("ordinal-4l")
        run_case("ordinal-4l", model, *months_case(model, lower=True), repeats=args.repeats, exact=True)
    if not args.skip_real:
        model = ti.models.load("smollm2-135m")
        run_case("SmolLM2-135M", model, *months_case(model, lower=False), repeats=1, exact=args.exact_real,
                 loop_sample=None if args.exact_real else 60)


if __name__ == "__main__":
    main()
