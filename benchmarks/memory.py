"""Benchmark: a patching sweep's peak memory against its ``memory_mb`` budget.

The engine sizes each stacked forward pass to ``memory_mb`` (``tl_interp.engine.passes``);
the process also holds the model and the base caches (the source run's activations, the base
run's residuals, keys and values). Each case runs in a fresh subprocess and reports its peak
resident set size (``resource.getrusage``, so nothing from an earlier case counts):

- ``base``: the model, the inputs and the base work of the sweep only (``plan_sweep``, the
  source cache, ``BaseRun``): what the process holds before its first stacked pass;
- ``sweep``: the whole sweep at the budget.

It prints, per case, ``ratio = peak(sweep) / (peak(base) + memory_mb)`` (the goal is <= 1.5)
and ``pass/budget = (peak(sweep) - peak(base)) / memory_mb``, the stacked passes' own memory
against the budget they were given. Cases: a plain-function metric (full logits every pass)
over residual positions, a neuron sweep (``site="mlp_post", over="d_mlp"``) and a pattern
sweep (``site="pattern", over=("head_index", "dest_pos")``), on a random model whose
activations at these budgets dwarf its weights.

Run: python benchmarks/memory.py [--budgets 256 1024]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

CASES = {  # name -> (site, over, layers, metric kind, batch, seq)
    "plain-metric resid_pre x pos": ("resid_pre", "pos", None, "plain", 8, 32),
    "neurons mlp_post x d_mlp": ("mlp_post", "d_mlp", [2, 3], "metric", 4, 16),
    "pattern x (head, dest_pos)": ("pattern", ("head_index", "dest_pos"), [2, 3], "metric", 8, 32),
}


def _model() -> Any:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=4, d_model=256, n_heads=8, d_head=32, d_mlp=512, d_vocab=8192, n_ctx=64,
                                  act_fn="gelu_new", normalization_type="LN", seed=0)
    return HookedTransformer(cfg).eval()


def _child(case: str, budget: float, mode: str) -> dict[str, Any]:
    import torch

    import tl_interp as ti
    from tl_interp import hooks
    from tl_interp.engine.run import BaseRun, EngineOptions
    from tl_interp.patching._sweep import plan_sweep

    site, over, layers, kind, batch, seq = CASES[case]
    model = _model()
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, 8192, (batch, seq), generator=g)
    corrupted = torch.randint(0, 8192, (batch, seq), generator=g)  # every position differs: no cell is skipped
    if kind == "plain":
        def metric(logits: torch.Tensor) -> torch.Tensor:
            return (logits[:, -1, 1] - logits[:, -1, 2]).mean()
    else:
        metric = ti.metrics.logit_diff(1, 2)
    start = time.perf_counter()
    with torch.no_grad():
        if mode == "base":
            plan = plan_sweep(model, clean, corrupted, metric, site=site, over=over, direction="denoise",
                              layers=layers, attention_mask=None)
            source = hooks.cache(plan.names)
            source.run(model, plan.source.tokens)
            BaseRun(model, plan.base, metric, plan.names, EngineOptions(memory_mb=budget))
            stats: dict[str, Any] = {}
        else:
            result = ti.patching.sweep(model, clean, corrupted, metric, site=site, over=over, layers=layers,
                                       memory_mb=budget, progress=False)
            stats = {"passes": result.provenance.settings["passes"], "cells": result.values.numel()}
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux
    return {"peak_mb": peak_mb, "seconds": time.perf_counter() - start, **stats}


def _run(case: str, budget: float, mode: str) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    out = subprocess.run([sys.executable, __file__, "--child", case, str(budget), mode], capture_output=True, text=True,
                         env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budgets", type=float, nargs="+", default=[256.0, 1024.0])
    parser.add_argument("--child", nargs=3, metavar=("CASE", "BUDGET", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        case, budget, mode = args.child
        print(json.dumps(_child(case, float(budget), mode)))
        return
    print("case | memory_mb | base peak MB | sweep peak MB | passes | ratio (goal <= 1.5) | pass/budget | sweep s")
    for case in CASES:
        for budget in args.budgets:
            base, full = _run(case, budget, "base"), _run(case, budget, "sweep")
            ratio = full["peak_mb"] / (base["peak_mb"] + budget)
            own = (full["peak_mb"] - base["peak_mb"]) / budget
            print(f"{case} | {budget:g} | {base['peak_mb']:.0f} | {full['peak_mb']:.0f} | {full['passes']} "
                  f"({full['cells']} cells) | {ratio:.2f}x | {own:.2f}x | {full['seconds']:.1f}", flush=True)


if __name__ == "__main__":
    main()
