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

Run: python benchmarks/similarity.py [--loop-permutations 300] [--permutations 10000]
"""

import argparse
import time

import torch

import tl_interp as ti
from _timing import timed
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--d", type=int, default=256)
    parser.add_argument("--permutations", type=int, default=10_000)
    parser.add_argument("--loop-permutations", type=int, default=300)
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
