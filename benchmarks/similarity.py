"""Benchmark: vectorised permutation nulls of RSA and linear CKA vs a plain Python loop.

10,000 random pairings (rows of Y reordered) of X, Y with n=512 rows and d=256 features, in
one run, on the same permutations (``ti.stats.permutation_indices``, seed 0):

- RSA (correlation RDM, Spearman): ``ti.stats.permutation_test(ti.similarity.rsa, ...)``
  reorders the rank-transformed RDM of Y (no distances, no ranks recomputed) against a loop
  calling ``ti.similarity.rsa(X, Y[p])`` per permutation;
- linear CKA: the default null (reorders the centred Gram matrix of Y, n^2 entries per
  permutation), the cross-product path (||Xc^T Yc[P]||^2 as one GEMM per chunk, n d1 d2
  multiply-adds per permutation) and a loop calling ``ti.similarity.cka(X, Y[p])``. The
  n d1 d2 multiply-add bound is priced at this machine's float64 GEMM rate, measured here on
  a GEMM of the same shape.

The loops are slow, so they run on the first ``--loop-permutations`` permutations and their
time is extrapolated to 10,000 (said in the output); their null values and p-values are
compared with the vectorised ones on exactly those permutations.

Since issue 22 (the default sections, ``--sections metrics compare``), per metric of
``compare`` (``--metrics``) and at n = 256, 1,024 and 4,096 rows (``--sizes``; d = ``--metric-d``):

- the bootstrap (resamples as row counts, ``compare``'s batched forms) and the permutation null,
  each against the loop (one metric call per resample / permutation, timed on a few and
  extrapolated; skipped where one call takes longer than ``--loop-max-call`` seconds, said in the
  output) and against the issue's bound: one gather of an n x n matrix per resample (CKA, RBF CKA,
  mutual kNN), one gather and one sort of the n(n-1)/2 dissimilarities (RSA bootstrap), one
  gather of the fixed ranks and a dot product (RSA permutations), one SVD of the d x d
  cross-product (Procrustes, SVCCA, PWCCA), all measured here in the same run on the same shapes;
- for Procrustes, SVCCA and PWCCA every bound of "Bounds of the SVD family" below, in a table after
  each size's, with the bootstrap's ratio to each ("x prod" in the main table is ``prod``);
- the peak resident memory each metric's null and bootstrap add to the process ("MB"; VmHWM reset
  before each, Linux), against ``--memory-mb``;
- ``compare(X, Y)`` with its defaults at n = 512, d = 256 (goal: under a minute of wall time on
  2 cores), and at n = 4,096 only its announced estimate and peak memory (``--compare-large``).

Bounds of the SVD family. The issue prices each bootstrap at "one gather/sort/SVD per resample,
measured on this machine in the same run"; for CKA the operation is "a gather of rows and columns"
and for RSA "gather, then ranks": what the metric's definition does to the resampled data. For the
SVD family the words allow several readings, so all are printed, each measured here per resample:

- ``svd``: one SVD (values) of the r1 x r2 cross-product (r = min(n, d)). The d x d SVD alone. A
  resample must first form that cross-product, whose entries are n-term sums with per-resample
  weights: n d1 d2 multiply-adds that no exact method avoids, ~5x the 64 x 64 SVD at n = 4,096
  (Procrustes; SVCCA and PWCCA form three). So this bound is out of reach at n >> d by arithmetic,
  not by implementation.
- ``data``: the definition's decompositions on the resampled data, as a loop user computes them:
  SVCCA (SVD-reduce each side, then CCA) and PWCCA (each side's SVD basis) gather each side's rows,
  centre them and take the SVD of that n x d matrix, two per resample (one per side; with one
  side only, halve the bound); Procrustes (the SVD of Xr^T Yr) gathers, centres, forms Xr^T Yr and
  takes its SVD. The CCA's own small SVD is left out. Where the batched form beats it (ratio < 1),
  that says the batching works, not that nothing is left.
- ``prod``: the unavoidable cross-products (Procrustes Xr^T Yr; SVCCA, PWCCA also Xr^T Xr and Yr^T Yr,
  half each by symmetry) at this machine's float64 GEMM rate (a GEMM of the same shape), plus the
  decompositions computed from covariances: Procrustes one SVD, SVCCA and PWCCA one
  eigendecomposition per side and one SVD (values). The library's PWCCA and SVCCA with keep=1.0
  whiten by Cholesky (cheaper than eigh) but PWCCA needs the SVD's vectors (~3x its values).
- ``prod+svd``: the same cross-products plus one SVD (values) only: "one SVD per resample" once the
  matrix it is of has been formed, with nothing for whitening. The strictest reading that can be met
  at all. SVCCA with ``keep < 1`` can't reach it at small n: keeping a variance fraction needs each
  side's spectrum and its directions (two eigendecompositions, ~3 SVDs' worth at d = 64).

Which of these the issue's "within 3x" is held to is the lead's call; the printed table makes each
ratio visible. This benchmark's author would use ``prod``. The issue listed "the cross-covariances for
Procrustes and SVCCA where exact" among what resamples share, and priced one SVD on top. But a
resample's cross-covariance is not shared: its weights change. What is shared is the centred data,
so re-forming the products is the inherent per-resample operation, as the gather is for CKA.
``prod`` prices that, plus the decompositions each definition needs.

Wall times on a shared machine vary with its load: ``uptime`` is printed first.

Run: python benchmarks/similarity.py [--sections metrics compare nulls10k] [--sizes 256 1024 4096]
"""

import argparse
import functools
import os
import sys
import time

import torch

import tl_interp as ti
from _timing import timed
from tl_interp.errors import InputError, UnsupportedError
from tl_interp.similarity._kernels import cross_product_null
from tl_interp.stats import permutation_p_value


def data(n: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    # a weak shared signal, so the p-values are neither 1/(B+1) nor ~uniform noise
    y = 0.04 * x @ torch.randn(d, d, generator=g, dtype=torch.float64) / d ** 0.5 + torch.randn(n, d, generator=g,
                                                                                               dtype=torch.float64)
    return x, y


def loop_null(metric, x, y, perms):
    return torch.tensor([metric(x, y[p]) for p in perms], dtype=torch.float64)


def report(name, fast, fast_time, loop_time_per, loop_null_values, perms_loop, b):
    k = perms_loop.shape[0]
    diff = float((fast.null[:k] - loop_null_values).abs().max())
    p_fast = float(permutation_p_value(fast.null[:k], fast.statistic, "greater"))
    p_loop = float(permutation_p_value(loop_null_values, fast.statistic, "greater"))
    loop_total = loop_time_per * b
    print(f"{name}: observed {float(fast.statistic):.5f}, p = {float(fast.p_value):.4f} over {b} permutations")
    print(f"  vectorised {fast_time:.2f}s CPU; loop {loop_total:.1f}s CPU (extrapolated from {k} permutations: "
          f"{loop_time_per * 1e3:.2f} ms each); ratio {loop_total / fast_time:.1f}x")
    print(f"  same {k} permutations: max |null difference| {diff:.2e}; p-value vectorised {p_fast:.4f} vs loop "
          f"{p_loop:.4f} ({'agree' if p_fast == p_loop else 'DIFFER'})")
    return loop_total / fast_time


def gemm_rate(n: int, d1: int, d2: int, chunk: int) -> float:
    a = torch.randn(d1, n, dtype=torch.float64)
    b = torch.randn(n, chunk * d2, dtype=torch.float64)
    (_, cpu), _ = timed(lambda: a @ b, 5)
    return n * d1 * d2 * chunk / cpu


def nulls10k(args) -> None:
    n, d, b = args.n, args.d, args.permutations
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; n={n}, d1=d2={d}, {b} permutations")
    x, y = data(n, d)
    perms = ti.stats.permutation_indices(n, b, seed=0)
    perms_loop = perms[:args.loop_permutations]

    (_, t_rsa), rsa_fast = timed(lambda: ti.stats.permutation_test(ti.similarity.rsa, x, y, permutations=perms), 1)
    (_, t_rsa_loop), rsa_loop = timed(lambda: loop_null(ti.similarity.rsa, x, y, perms_loop), 1)
    rsa_ratio = report("RSA (correlation RDM, Spearman)", rsa_fast, t_rsa, t_rsa_loop / len(perms_loop), rsa_loop,
                       perms_loop, b)

    (_, t_cka), cka_fast = timed(lambda: ti.stats.permutation_test(ti.similarity.cka, x, y, permutations=perms), 1)
    (_, t_cka_loop), cka_loop = timed(lambda: loop_null(ti.similarity.cka, x, y, perms_loop), 1)
    cka_ratio = report("linear CKA (Gram path, the default)", cka_fast, t_cka, t_cka_loop / len(perms_loop),
                       cka_loop, perms_loop, b)

    xc, yc = x - x.mean(0), y - y.mean(0)
    scale = 1 / float(((xc.T @ xc).norm() * (yc.T @ yc).norm()))
    cross = cross_product_null(xc, yc, scale)
    start = time.process_time()
    cross_null = torch.cat([cross.evaluate(block) for block in perms.split(cross.chunk)])
    t_cross = time.process_time() - start
    cross_diff = float((cross_null - cka_fast.null).abs().max())

    macs = b * n * d * d
    peak = gemm_rate(n, d, d, cross.chunk)
    bound = macs / peak
    print(f"linear CKA multiply-add bound: {b} x n d1 d2 = {macs / 1e9:.0f} G multiply-adds; this machine's float64 "
          f"GEMM (same shape) runs {peak / 1e9:.1f} G/s -> bound {bound:.2f}s")
    print(f"  cross-product path: {t_cross:.2f}s CPU = {macs / t_cross / 1e9:.1f} G multiply-adds/s, "
          f"{t_cross / bound:.2f}x the bound; {t_cka_loop / len(perms_loop) * b / t_cross:.1f}x the loop; "
          f"max |null difference| vs Gram path {cross_diff:.2e}")
    print(f"  Gram path: {t_cka:.2f}s CPU = {t_cka / bound:.2f}x the bound (it reorders n^2 = {n * n} entries per "
          f"permutation instead of {n * d * d} multiply-adds, so it can beat the bound)")
    best = min(t_cka, t_cross)
    print("goals: RSA >= 20x loop: " + ("met" if rsa_ratio >= 20 else "NOT met") + f" ({rsa_ratio:.1f}x); "
          "CKA within 2x of bound: " + ("met" if best <= 2 * bound else "NOT met") + f" ({best / bound:.2f}x); "
          "CKA >= 4x loop: " + ("met" if cka_ratio >= 4 else "NOT met") + f" ({cka_ratio:.1f}x)")


def wall(fn, repeats: int = 1):
    (w, _), out = timed(fn, repeats)
    return w, out


def per_row(fn, rows: torch.Tensor, block: int) -> float:
    """CPU seconds (all threads) per row of fn over ``rows`` in blocks: steadier than wall time on a
    shared machine, so the ratios of the metric tables compare like with like."""
    start = time.process_time()
    for first in range(0, rows.shape[0], block):
        fn(rows[first:first + block], first)
    return (time.process_time() - start) / rows.shape[0]


def cpu(fn):
    start = time.process_time()
    out = fn()
    return time.process_time() - start, out


def bounds(name: str, x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor) -> tuple[float, float]:
    """Seconds per resample and per permutation of the issue's bound operations (see the module docstring)."""
    n = x.shape[0]
    if name in ("cka", "cka_rbf", "cka_debiased", "mutual_knn"):
        k = x @ x.T
        one = per_row(lambda r, _: [k.index_select(0, p).index_select(1, p) for p in r], rows, 16)
        return one, one
    if name == "rsa":
        i, j = torch.triu_indices(n, n, offset=1)
        d = torch.rand(i.numel(), dtype=torch.float64)
        square = torch.zeros(n, n, dtype=torch.float64)
        square[i, j] = d
        flat = square.reshape(-1)

        def gather_sort(r, _):
            for p in r:
                flat[p[i] * n + p[j]].sort()
        index = [rows[0][i] * n + rows[0][j]]  # a precomputed index: the bound excludes index arithmetic
        boot = per_row(gather_sort, rows[:4], 4)
        perm = per_row(lambda r, _: [torch.dot(flat[index[0]], d) for _ in r], rows, 16)
        return boot, perm
    m = torch.randn(16, min(n, x.shape[1]), min(n, y.shape[1]), dtype=torch.float64)
    one = per_row(lambda r, _: torch.linalg.svdvals(m[: r.shape[0]]), rows[:32], 16)
    return one, one


SVD_FAMILY = ("procrustes", "svcca", "pwcca")


def svd_family_bounds(name: str, x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor) -> dict[str, float] | None:
    """Seconds per resample of every bound considered for Procrustes, SVCCA and PWCCA (module docstring,
    "Bounds of the SVD family"), each measured here on the same shapes:

    - ``svd``: one SVD (values) of the r1 x r2 cross-product (the issue's words read as the d x d SVD);
    - ``data``: what the metric's definition decomposes per resample, as a loop user computes it:
      SVCCA and PWCCA gather each side's rows, centre them and take the SVD of that n x d matrix (two
      per resample); Procrustes gathers, centres, forms Xr^T Yr and takes its SVD;
    - ``prod``: the cross-products a resample can't avoid (n d1 d2 multiply-adds, symmetric ones half) at
      this machine's GEMM rate, plus the decompositions the score is defined by (Procrustes one SVD;
      SVCCA, PWCCA one eigendecomposition per side and one SVD);
    - ``prod+svd``: the same cross-products plus one SVD (values) only: no allowance for whitening.
    """
    if name not in SVD_FAMILY:
        return None
    n, r1, r2 = x.shape[0], min(x.shape), min(y.shape)
    macs = r1 * r2 + (0 if name == "procrustes" else r1 * (r1 + 1) // 2 + r2 * (r2 + 1) // 2)
    counts = torch.rand(256, n, dtype=torch.float64)
    outer = torch.randn(n, 1024, dtype=torch.float64)
    (_, seconds), _ = timed(lambda: counts @ outer, 3)
    gemm = n * macs * seconds / (256 * n * 1024)  # at the (CPU-time) rate of a GEMM of the same shape
    m = torch.randn(16, r1, r2, dtype=torch.float64)
    svd = per_row(lambda r, _: torch.linalg.svdvals(m[: r.shape[0]]), rows[:32], 16)
    s = m.mT @ m
    eigh = per_row(lambda r, _: torch.linalg.eigh(s[: r.shape[0]]), rows[:32], 16)

    def centred(t: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        tr = t[p]
        return tr - tr.mean(0)

    if name == "procrustes":
        data = per_row(lambda r, _: [torch.linalg.svdvals(centred(x, p).T @ centred(y, p)) for p in r], rows[:16], 16)
    else:
        data = per_row(lambda r, _: [(torch.linalg.svd(centred(x, p), full_matrices=False),
                                      torch.linalg.svd(centred(y, p), full_matrices=False)) for p in r], rows[:8], 8)
    decompositions = svd if name == "procrustes" else svd + 2 * eigh
    return {"svd": svd, "data": data, "prod": gemm + decompositions, "prod+svd": gemm + svd}


def print_svd_family(n: int, times: dict[str, tuple[float, dict[str, float]]], per: int) -> None:
    """The SVD family's bootstrap against every bound in ``svd_family_bounds``, in CPU seconds per ``per`` resamples."""
    if not times:
        return
    labels = ("svd", "data", "prod", "prod+svd")
    print(f"  SVD family at n={n}, bootstrap vs each bound (s per {per} resamples; svd: one d x d SVD; data: the "
          "defining SVD(s) of the resampled n x d data, gathered and centred; prod: cross-products at the GEMM "
          "rate + defining decompositions; prod+svd: cross-products + one SVD)")
    print(f"  {'metric':>10} | {'bootstrap':>9} " + " ".join(f"{lab:>8}" for lab in labels) + " | "
          + " ".join(f"{'x ' + lab:>10}" for lab in labels))
    for name, (t_boot, bound) in times.items():
        print(f"  {name:>10} | {t_boot:9.2f} " + " ".join(f"{per * bound[lab]:8.2f}" for lab in labels) + " | "
              + " ".join(f"{t_boot / (per * bound[lab]):9.2f}x" for lab in labels), flush=True)


def peak_mb() -> float:
    """This process's peak resident memory since the last ``reset_peak()`` (Linux VmHWM), in MB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def resident_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def reset_peak() -> float:
    """Reset the peak to the current resident memory (Linux clear_refs 5); returns that level in MB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return resident_mb()


def metric_rows(n: int, d: int, args) -> None:
    x, y = data(n, d)
    x, y = ti.stats._inputs.unit_scale(x)[0], ti.stats._inputs.unit_scale(y)[0]
    from tl_interp.similarity._compare import _one_resample, _resolved
    from tl_interp.stats._bootstrap import bootstrap_evaluator
    from tl_interp.stats._permutation import null_evaluator

    b, per = args.resamples, 1000
    index = ti.stats.bootstrap_indices(n, b, seed=0)
    perms = ti.stats.permutation_indices(n, b, seed=0)
    print(f"\nn={n}, d1=d2={d}: CPU seconds ({torch.get_num_threads()} thread(s)) per {per} resamples / permutations, each = preparation (once) + "
          f"{per} x the time per row measured on {b} rows; MB: peak memory added (memory_mb={args.memory_mb:.0f})")
    print(f"{'metric':>12} | {'bootstrap':>9} {'loop':>8} {'bound':>8} {'x loop':>7} {'x bound':>7} {'x prod':>7} "
          f"{'MB':>5} | {'null':>8} {'loop':>8} {'bound':>8} {'x loop':>7} {'x bound':>7} {'MB':>5}")
    svd_times: dict[str, tuple[float, dict[str, float]]] = {}
    for name, stat, resampled in _resolved(tuple(args.metrics), {}):
        one = _one_resample(name, stat, resampled, x, y)
        rows = index[:max(2, min(b, int(b * 256 / n)))] if name in ("rsa", "cka_rbf") and n > 256 else index
        base = reset_peak()
        try:  # the evaluator runs the metric's own checks first: a refusal surfaces here, before any timing
            prep, (boot, block) = cpu(lambda: bootstrap_evaluator(resampled or stat, x, y, one=one,
                                                                  memory_mb=args.memory_mb))
        except (InputError, UnsupportedError) as err:  # the library refuses these shapes: say so, go on
            print(f"{name:>12} | refused at n={n}, d={d} ({type(err).__name__}): {err}", flush=True)
            continue
        if rows.shape[0] < min(block, args.max_block_rows):  # time whole blocks: a block's fixed costs are shared
            rows = ti.stats.bootstrap_indices(n, min(block, args.max_block_rows), seed=0)
        t_boot = prep + per * per_row(boot, rows, block)
        del boot
        mb_boot = peak_mb() - base
        base = reset_peak()
        prep, (evaluate, chunk, _) = cpu(lambda: null_evaluator(stat, "pairings", x, y))
        t_null = prep + per * per_row(lambda r, _: evaluate(r), perms, chunk)
        del evaluate
        mb_null = peak_mb() - base
        call = cpu(lambda: stat(x, y))[0]
        if call <= args.loop_max_call:
            k = max(2, min(args.loop_rows, int(args.loop_budget / max(call, 1e-9))))
            loop_boot = per * per_row(lambda r, s: [one(s + i, p) for i, p in enumerate(r)], index[:k], k)
            loop_null = per * per_row(lambda r, _: [stat(x, y[p]) for p in r], perms[:k], k)
            lb, ln = f"{loop_boot:8.2f}", f"{loop_null:8.2f}"
            rb, rn = f"{loop_boot / t_boot:6.1f}x", f"{loop_null / t_null:6.1f}x"
        else:
            lb = ln = "  (skip)"
            rb = rn = "      -"
        bound_boot, bound_null = (per * t for t in bounds(name, x, y, index))
        family = svd_family_bounds(name, x, y, index)
        xp = "      -" if family is None else f"{t_boot / (per * family['prod']):6.2f}x"
        if family is not None:
            svd_times[name] = (t_boot, family)
        print(f"{name:>12} | {t_boot:9.2f} {lb} {bound_boot:8.2f} {rb} {t_boot / bound_boot:6.2f}x {xp} {mb_boot:5.0f} | "
              f"{t_null:8.2f} {ln} {bound_null:8.2f} {rn} {t_null / bound_null:6.2f}x {mb_null:5.0f}", flush=True)
    print("  loops timed on a few rows and extrapolated; '(skip)': one metric call took over "
          f"{args.loop_max_call}s, so the loop was not run; 'x prod': against the cross-product bound (docstring)")
    print_svd_family(n, svd_times, per)


def compare_goal(args) -> None:
    x, y = data(args.compare_n, args.compare_d)
    seconds, res = wall(lambda: ti.similarity.compare(x, y, progress=False))
    print(f"\ncompare(X, Y) with its defaults (5 metrics, 1000 permutations, 1000 resamples), n={args.compare_n}, "
          f"d={args.compare_d}: {seconds:.1f}s wall on {torch.get_num_threads()} threads -> goal (< 60 s): "
          + ("met" if seconds < 60 else "NOT met"))
    print("  " + res.summary().replace("\n", "\n  "))
    if args.compare_large:
        from tl_interp.similarity import _schedule
        x, y = data(args.compare_large, args.compare_d)
        stop = {}

        def estimate_only(stages, *, what, progress, announce):
            done = [[] for _ in stages]
            stop["seconds"] = sum(per := _schedule._estimate(stages, done))
            stop["stages"] = ", ".join(f"{s.label} {t / 60:.1f}" for s, t in zip(stages, per))
            raise KeyboardInterrupt

        original = _schedule.run_stages
        from tl_interp.similarity import _compare
        _compare.run_stages = estimate_only
        start, base = time.perf_counter(), reset_peak()
        try:
            ti.similarity.compare(x, y, progress=False, memory_mb=args.memory_mb)
        except KeyboardInterrupt:
            pass
        finally:
            _compare.run_stages = original
        print(f"compare at n={args.compare_large}, d={args.compare_d}: estimated {stop['seconds'] / 60:.1f} min "
              f"(building and timing every stage took {time.perf_counter() - start:.0f}s); peak resident memory "
              f"{peak_mb():.0f} MB, {peak_mb() - base:.0f} MB above the {base:.0f} MB before the call, with "
              f"memory_mb={args.memory_mb}")
        print(f"  per stage (min): {stop['stages']}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sections", nargs="+", default=["metrics", "compare"],
                        choices=["metrics", "compare", "nulls10k"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--metrics", nargs="+", default=["cka", "cka_rbf", "cka_debiased", "svcca", "pwcca",
                                                         "procrustes", "rsa", "mutual_knn"])
    parser.add_argument("--metric-d", type=int, default=64)
    parser.add_argument("--resamples", type=int, default=100, help="rows (resamples, permutations) timed per metric")
    parser.add_argument("--loop-rows", type=int, default=20)
    parser.add_argument("--loop-budget", type=float, default=20.0, help="seconds of loop timing per metric and size")
    parser.add_argument("--loop-max-call", type=float, default=5.0)
    parser.add_argument("--memory-mb", type=float, default=1024.0)
    parser.add_argument("--metric-threads", type=int, default=1, help="torch threads for the metric tables")
    parser.add_argument("--max-block-rows", type=int, default=256, help="bootstrap rows timed: up to one block")
    parser.add_argument("--compare-n", type=int, default=512)
    parser.add_argument("--compare-d", type=int, default=256)
    parser.add_argument("--compare-large", type=int, default=0, help="e.g. 4096: compare's estimate and memory")
    parser.add_argument("--n", type=int, default=512, help="nulls10k")
    parser.add_argument("--d", type=int, default=256, help="nulls10k")
    parser.add_argument("--permutations", type=int, default=10_000, help="nulls10k")
    parser.add_argument("--loop-permutations", type=int, default=300, help="nulls10k")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; uptime: {os.popen('uptime').read().strip()}")
    if "metrics" in args.sections:
        threads = torch.get_num_threads()
        torch.set_num_threads(args.metric_threads)  # idle OpenMP threads spin, and that counts as CPU time
        for n in args.sizes:
            metric_rows(n, args.metric_d, args)
        torch.set_num_threads(threads)
    if "compare" in args.sections:
        compare_goal(args)
    if "nulls10k" in args.sections:
        nulls10k(args)
    print(f"uptime at the end: {os.popen('uptime').read().strip()}", file=sys.stdout)


if __name__ == "__main__":
    main()
