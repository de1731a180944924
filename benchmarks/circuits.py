"""Benchmark: edge attribution and exact circuit evaluation (``ti.circuits``), in one run.

Each number is measured against its reference in the same run:

1. EAP and EAP-IG (inputs, 5 steps) against one forward + backward of the model on the same
   batch (parameters frozen, gradients to the activations only): the bound a gradient method
   cannot beat;
2. exact single-edge patching (``attribute(method="exact")``, many edges per stacked pass)
   against a loop with one forward pass per edge (``_circuit_loop.edge_forward``: the senders'
   outputs read once, then one ``run_with_hooks`` per edge with one hook at its receiver's input,
   per-head inputs switched on only for edges into heads); best of ``--repeats`` on both sides,
   alternating, so load affects them alike; the max |difference| is printed;
3. exact faithfulness of MIB's 10 budgets x 3 methods (30 circuits, one ``faithfulness`` call)
   against two loops (``_circuit_loop.circuit_forward``: one einsum per receiver hook point, as the
   reference's ``evaluate_graph`` builds each input): one forward per circuit with the corrupted run
   done once, and the reference's own order (a corrupted and a patched forward per circuit); all
   three best of ``--repeats``, alternating;
4. the process's peak resident memory after each step (``ru_maxrss``: a running maximum).

Cases: ``ordinal-4l`` (months continuation, 8 prompts) and SmolLM2-135M (the months task,
" April" after three months against a corrupted list; ``--skip-real`` skips it). On SmolLM2
(~1.2e5 edges) exact single-edge patching is measured on a sample, batched and looped on the
same edges: ``--edges-per-layer`` random edges into each of layers 0, 5, 10, 15, 20, 25, 29 and
into the logits, stratified by kind of receiver input (q, k, v, MLP), the loop on one edge of
every kind per group; the totals for every edge are extrapolated from those per-edge costs (and
printed as extrapolated; see ``sampled_exact``); the third set of circuits ranks EAP's scores by signed value (MIB's
CPR selection) in place of exact scores.

Run: python benchmarks/circuits.py [--skip-real | --skip-zoo] [--prompts N] [--edges-per-layer N]
     [--skip-faithfulness] [--skip-exact] [--repeats N] [--threads N] [--reference-loop]
The SmolLM2 faithfulness row alone: ``--skip-zoo --skip-exact`` (its third set of circuits is
then EAP ranked by signed score).
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
from tl_interp.circuits import MIB_BUDGETS, Circuit  # noqa: E402

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


def _edge_kind(name):
    """``q``, ``k``, ``v``, ``mlp`` or ``logits``: what an edge's receiver reads."""
    receiver = name.split("->")[1]
    return receiver[-2] if receiver.endswith(">") else "logits" if receiver == "logits" else "mlp"


def sampled_exact(label, model, g, clean, corrupted, metric, loop_edges, layers, per_layer, loop_per_kind=1):
    """Exact single-edge patching on a sample of edges, batched and looped on the same edges.

    The sample is stratified so it represents every edge of the graph: for each of ``layers``
    and for the logits, ``per_layer`` random edges into that layer's receivers, drawn from each
    kind of receiver input (q, k, v, MLP; the logits) in proportion to its share of the layer's
    edges, at least two of each kind. A batched pass runs from its receivers' layer on, so its
    cost per edge depends on the layer (and the kind): each group's cost per edge is measured on
    its own call, and the total for every edge interpolates linearly between sampled layers. The
    loop's cost per edge depends on the kind only (a head's edge needs TL's per-head inputs, an
    MLP's or the logits' does not): ``loop_per_kind`` edges of every kind in every group are
    looped, and the loop's total weights each kind's mean cost by its number of edges.

    Each batched call is the whole study as ``attribute`` runs it (``exact_study``) and pays its
    fixed costs once (one forward pass reading the senders and the clean residual streams, the
    corrupted prompts riding in the engine's base run; one re-layout of the weights), which a study
    of every edge pays once in all:
    they are measured on a study of one edge, taken out of each group's cost per edge and
    counted once in the total (the ratio with them in every group is printed too)."""
    from tl_interp.circuits._exact import exact_study
    from tl_interp.circuits._runs import prepare
    from tl_interp.engine.executors import LocalExecutor

    _, clean_b, corrupt_b = prepare(model, clean, corrupted, metric, "corrupted", differentiable=False)

    def study(only, executor=None):
        return exact_study(model, g, clean_b, corrupt_b, metric, "corrupted", 1024.0, executor, False, only=only)
    gen = torch.Generator().manual_seed(0)
    layer_of = [int(r.hook_name.split(".")[1]) for r in g.receivers for _ in range(r.n_senders)]
    layer_of[-len(g.senders):] = [g.n_layers] * len(g.senders)  # the logits: after the last block
    kind_of = [_edge_kind(name) for name in g.edges]
    costs, loop_costs, worst, raw = {}, {}, 0.0, {}
    one = {len(g.edges) - 1}
    apart = timed(lambda: study(one, LocalExecutor()), 3)[0]  # the senders' forwards apart (main's path)
    fixed = timed(lambda: study(one), 3)[0]
    print(f"[{label}]   fixed cost of a study (a study of one edge, best of 3): {fixed[0]:.2f}s wall / "
          f"{fixed[1]:.2f}s CPU (senders' forwards apart from the base run: {apart[1]:.2f}s CPU)")
    for layer in (*layers, g.n_layers):
        pool = [i for i, at in enumerate(layer_of) if at == layer]
        picks, composition = [], {}
        for kind in dict.fromkeys(kind_of[i] for i in pool):
            of_kind = [i for i in pool if kind_of[i] == kind]
            n = min(len(of_kind), max(2, round(per_layer * len(of_kind) / len(pool))))
            picks += [of_kind[k] for k in torch.randperm(len(of_kind), generator=gen)[:n].tolist()]
            composition[kind] = n
        picks = sorted(picks)
        (w, c), (values, _, _) = timed(lambda: study(set(picks)), 1)
        few = [i for kind in composition for i in [p for p in picks if kind_of[p] == kind][:loop_per_kind]]
        for i in few:
            (wl, cl), looped = timed(lambda: loop_edges([i]), 1)
            worst = max(worst, abs(values.mean(0)[picks.index(i)].double().item() - looped.double().item()))
            loop_costs.setdefault(kind_of[i], []).append((wl, cl))
        raw[layer] = (w / len(picks), c / len(picks))
        costs[layer] = (max(w - fixed[0], 0.0) / len(picks), max(c - fixed[1], 0.0) / len(picks))
        where = "logits" if layer == g.n_layers else f"layer {layer}"
        print(f"[{label}]   {where} (SAMPLE of {len(pool)} edges: {', '.join(f'{n} {k}' for k, n in composition.items())}):"
              f" batched {len(picks)} edges {c:.2f}s CPU ({1e3 * costs[layer][1]:.1f} ms/edge without the fixed "
              f"cost); "
              f"loop {len(few)} of them ({', '.join(kind_of[i] for i in few)}) "
              f"{sum(loop_costs[kind_of[i]][-1][1] for i in few):.2f}s CPU")
    known = sorted(costs)

    def at(layer, k, table):  # the batched cost per edge at a layer, linear between sampled layers
        lo = max([x for x in known if x <= layer], default=known[0])
        hi = min([x for x in known if x >= layer], default=known[-1])
        if lo == hi:
            return table[lo][k]
        t = (layer - lo) / (hi - lo)
        return (1 - t) * table[lo][k] + t * table[hi][k]

    total_w = fixed[0] + sum(at(layer, 0, costs) for layer in layer_of)
    total_c = fixed[1] + sum(at(layer, 1, costs) for layer in layer_of)
    raw_c = sum(at(layer, 1, raw) for layer in layer_of)
    counts = {kind: kind_of.count(kind) for kind in loop_costs}
    mean = {kind: [sum(x[k] for x in v) / len(v) for k in (0, 1)] for kind, v in loop_costs.items()}
    loop_w = sum(counts[kind] * mean[kind][0] for kind in counts)
    loop_c = sum(counts[kind] * mean[kind][1] for kind in counts)
    print(f"[{label}]   loop per edge by kind: " + ", ".join(f"{kind} {1e3 * mean[kind][1]:.0f} ms CPU "
                                                            f"({counts[kind]} edges)" for kind in counts))
    n = len(g.edges)
    print(f"[{label}] exact single-edge patching, EXTRAPOLATED to all {n} edges from the per-edge costs above "
          f"(sampled layers {', '.join(map(str, layers))} and the logits, every kind of receiver input): "
          f"batched {total_w / 60:.1f} min wall / {total_c / 60:.1f} min CPU, loop {loop_w / 60:.1f} min wall / "
          f"{loop_c / 60:.1f} min CPU; speed-up {loop_w / total_w:.1f}x wall, {loop_c / total_c:.1f}x CPU "
          f"(goal >= 10x; {loop_c / raw_c:.1f}x CPU with the fixed cost paid by every sampled edge); max |diff| batched vs loop on the looped edges {worst:.1e}; peak {peak_mb():.0f} MB")


def run_case(label, model, clean, corrupted, metric, answers, *, repeats, exact_layers=None, exact_per_layer=100,
             skip_faithfulness=False, skip_exact=False, reference_loop=True):
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

    if skip_exact:
        print(f"[{label}] exact single-edge patching skipped (--skip-exact)")
    elif exact_layers is None:  # both sides best of `repeats`, alternating, so load affects them alike
        (w_loop, c_loop), (w_ex, c_ex) = (float("inf"),) * 2, (float("inf"),) * 2
        for _ in range(repeats):
            (w, c), looped = timed(lambda: loop_edges(range(len(g.edges))), 1)
            w_loop, c_loop = min(w_loop, w), min(c_loop, c)
            (w, c), scores["exact"] = timed(lambda: circuits.attribute(model, clean, corrupted, metric,
                                                                       method="exact", progress=False), 1)
            w_ex, c_ex = min(w_ex, w), min(c_ex, c)
        print(f"[{label}] single-edge loop (every edge, one run_with_hooks each): {w_loop:.2f}s wall / "
              f"{c_loop:.2f}s CPU (best of {repeats})")
        diff = (scores["exact"].scores.double() - looped.double()).abs().max().item()
        settings = scores["exact"].provenance.settings
        print(f"[{label}] exact batched: {w_ex:.2f}s wall / {c_ex:.2f}s CPU; speed-up {w_loop / w_ex:.1f}x wall, "
              f"{c_loop / c_ex:.1f}x CPU (goal >= 10x); max |diff| vs loop {diff:.1e}; {settings['passes']} passes, "
              f"{settings['final_kv_split']} with last-layer k/v edges split; {settings['receiving_cells']} cells at their "
              f"receiving layer; {settings['head_cells']}; "
              f"peak {peak_mb():.0f} MB")
    else:
        sampled_exact(label, model, g, clean, corrupted, metric, loop_edges, exact_layers, exact_per_layer)

    if skip_faithfulness:
        return
    budgets = [int(b * len(g.edges)) for b in MIB_BUDGETS]
    selections = [(s, True) for s in scores.values()] + ([] if "exact" in scores else [(scores["eap"], False)])
    circuit_list = [Circuit.top(s, n, absolute=a) for s, a in selections for n in budgets]
    masks = [torch.tensor([e in edges for e in g.edges]) for edges in (frozenset(c.edges) for c in circuit_list)]

    def loop_circuits(as_reference: bool):
        # as_reference: the reference's evaluate_graph runs the corrupted prompts again for every circuit
        with per_head_inputs(model):
            source = sender_outputs(model, g, corrupted)
            return torch.stack([score(circuit_forward(model, g, clean, sender_outputs(model, g, corrupted)
                                                      if as_reference else source, m)) for m in masks])

    # every side best of `repeats`, alternating, so load affects them alike
    names = {False: "one forward per circuit, corrupted run once",
             True: "the reference's evaluate_graph (corrupted + patched forward per circuit)"}
    sides = ("batched", False, True) if reference_loop else ("batched", False)
    best = {side: (float("inf"), float("inf")) for side in sides}
    looped_f = {}
    for _ in range(repeats):
        for side in sides:
            if side == "batched":
                (w, c), result = timed(lambda: circuits.faithfulness(model, clean, corrupted, circuit_list, metric,
                                                                    progress=False), 1)
            else:
                (w, c), looped_f[side] = timed(lambda: loop_circuits(side), 1)
            best[side] = (min(best[side][0], w), min(best[side][1], c))
    (w_f, c_f) = best["batched"]
    settings = result.provenance.settings
    print(f"[{label}] faithfulness of {len(circuit_list)} circuits (10 budgets x {len(selections)} methods), batched: "
          f"{w_f:.3f}s wall / {c_f:.3f}s CPU, best of {repeats} ({settings['circuits_evaluated']} distinct circuits "
          f"evaluated, {settings['passes']} passes, {settings['final_block_split']} with the final block at the last "
          f"position, circuit rows {settings['circuit_rows']}, senders read from the {settings['senders_read']}); "
          f"peak {peak_mb():.0f} MB")
    for flag in sides[1:]:
        (w_fl, c_fl) = best[flag]
        diff = (result.values.double() - looped_f[flag].double()).abs().max().item()
        print(f"[{label}]   vs loop, {names[flag]}: {w_fl:.3f}s wall / {c_fl:.3f}s CPU (best of {repeats}); speed-up "
              f"{w_fl / w_f:.1f}x wall, {c_fl / c_f:.1f}x CPU (goal >= 5x); max |diff| {diff:.1e}")

def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--skip-zoo", action="store_true", help="SmolLM2 only")
    parser.add_argument("--prompts", type=int, default=8, help="SmolLM2 prompts")
    parser.add_argument("--skip-faithfulness", action="store_true")
    parser.add_argument("--skip-exact", action="store_true",
                        help="skip exact single-edge patching (the circuits' third method is then EAP ranked by signed score)")
    parser.add_argument("--edges-per-layer", type=int, default=100, help="SmolLM2: sampled edges per sampled layer")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--reference-loop", action="store_true",
                        help="SmolLM2: also time the reference's evaluate_graph loop (a corrupted and a patched "
                             "forward per circuit: about twice the other loop, which always runs)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps timings steady)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if not args.skip_zoo:
        model = ti.models.load("ordinal-4l")
        run_case("ordinal-4l", model, *months_case(model, lower=True), repeats=args.repeats,
                 skip_faithfulness=args.skip_faithfulness, skip_exact=args.skip_exact)
    if not args.skip_real:
        model = ti.models.load("smollm2-135m")
        run_case("SmolLM2-135M", model, *months_case(model, lower=False, n=args.prompts), repeats=1,
                 exact_layers=(0, 5, 10, 15, 20, 25, 29), exact_per_layer=args.edges_per_layer,
                 skip_faithfulness=args.skip_faithfulness, skip_exact=args.skip_exact,
                 reference_loop=args.reference_loop)

if __name__ == "__main__":
    main()
