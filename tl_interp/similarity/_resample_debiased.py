"""Batched bootstrap of debiased linear CKA from the Gram matrices of the full data, with the loop's re-centring.

The loop (``cka_debiased_resampled``) reads a resample as counts w over its distinct items S
(m = |S| items, indicator s), centres their rows by the *unweighted* mean mu = X^T s / m, and takes
Song et al.'s unbiased HSIC as a U-statistic over distinct items weighted by w
(``_weighted_unbiased_hsic``). The weighted statistic is not invariant under that shift, so the
full data's centred Gram matrix can't be reused as it is; but the shifted Gram matrix is exactly

    K = (I - 1 s^T / m) G (I - s 1^T / m) = G + 1 a^T + a 1^T,   a = (s^T G s / m^2) / 2 - G s / m

for G = X X^T with X centred once (any fixed centring: (x_i - mu) . (x_j - mu) does not depend on
it). Every sum the estimator takes is then a sum over G, H (Y's) and their Hadamard products with
rank-one corrections, e.g. with K o L = G o H + diag(b) G + G diag(b) + diag(a) H + H diag(a) + ...

    u^T (K o L) v = u^T (G o H) v + (G u).(b o v) + (G v).(b o u) + (H u).(a o v) + (H v).(a o u)
                    + (1.u)(v.ab) + (u.a)(v.b) + (u.b)(v.a) + (u.ab)(1.v)

for u, v in {w, w o w}. So a block of resamples costs twelve matrix products of n x n row blocks
against [s | w | w o w] (G and H against all three, G o H, G o G, H o H against w and w o w) and
O(n) per resample. Absent items have w = 0 and drop out of every sum. The value equals the loop's
up to rounding; a resample with fewer than 4 distinct items (the loop's NaN) or whose HSIC(X, X)
or HSIC(Y, Y) keeps under ``CANCELLED`` of its uncentred size is flagged and run by the loop.
"""

import math

import torch
from torch import Tensor

from tl_interp.similarity._kernels import _checked, _factor, _weighted_unbiased_hsic, cka_debiased_resampled
from tl_interp.similarity._resample_kernels import _Median, _squared_distances
from tl_interp.similarity._resample_linear import BLOCK_BYTES, CANCELLED, few_distinct
from tl_interp.stats import PreparedBootstrap, register_bootstrap

__all__ = ["debiased_cka_bootstrap"]

_BLOCK_TERMS = 40  # n-vectors per resample held through a block: counts, the 12 products, both sides' terms


def _products(a: Tensor, b: Tensor, s: Tensor, w: Tensor, w2: Tensor, memory_mb: float) -> dict[str, Tensor]:
    """G @ [s, w, w2], H @ [s, w, w2] and (G o H), (G o G), (H o H) @ [w, w2], each (n, resamples),
    from row blocks of G = a a^T and H = b b^T sized by ``memory_mb``."""
    n, r = a.shape[0], s.shape[1]
    # per Gram row: g, h, their stack, the three Hadamard products and their stack (10 n), the products (12 r);
    # the budget left after the block's per-resample terms (``_BLOCK_TERMS``)
    left = memory_mb * 2**20 - 8 * _BLOCK_TERMS * n * r
    rows = max(1, int(left // (8 * (10 * n + 12 * r))))
    plain, hadamard = torch.cat([s, w, w2], 1), torch.cat([w, w2], 1)
    out = {k: torch.empty(n, (3 if k in ("G", "H") else 2) * r, dtype=torch.float64)
           for k in ("G", "H", "GH", "GG", "HH")}
    for start in range(0, n, rows):
        part = slice(start, start + rows)
        g, h = a[part] @ a.T, b[part] @ b.T
        out["G"][part], out["H"][part] = (torch.cat([g, h]) @ plain).split(g.shape[0])
        products = (torch.cat([g * h, g * g, h * h]) @ hadamard).split(g.shape[0])
        out["GH"][part], out["GG"][part], out["HH"][part] = products
    return out


class _Side:
    """One side's per-resample terms: K u (u = w, w2), the shift a, diag K and K_b w (diagonal left out)."""

    def __init__(self, products: Tensor, diag: Tensor, s: Tensor, w: Tensor, m: Tensor) -> None:
        gs, gw, gw2 = products.split(s.shape[1], 1)
        self.a = (s * gs).sum(0) / (2 * m * m) - gs / m
        self.diag = diag[:, None] + 2 * self.a
        total_w, a_w = w.sum(0), (self.a * w).sum(0)
        self.times = {"w": gw, "w2": gw2}  # G u, the uncentred products
        self.k_w = gw + a_w + total_w * self.a - self.diag * w  # K_b w: the shifted K without its diagonal


def _hadamard(hadamard: Tensor, k: _Side, l: _Side, u: str, v: str, vectors: dict[str, Tensor]) -> Tensor:
    """u^T (K_b o L_b) v per resample: the expansion in the module docstring, minus the diagonal."""
    uu, vv = vectors[u], vectors[v]
    base = hadamard.split(uu.shape[1], 1)[0 if v == "w" else 1]  # (G o H) v
    ab = k.a * l.a
    value = ((uu * base).sum(0) + (k.times[u] * l.a * vv).sum(0) + (k.times[v] * l.a * uu).sum(0)
             + (l.times[u] * k.a * vv).sum(0) + (l.times[v] * k.a * uu).sum(0)
             + uu.sum(0) * (vv * ab).sum(0) + (uu * k.a).sum(0) * (vv * l.a).sum(0)
             + (uu * l.a).sum(0) * (vv * k.a).sum(0) + (uu * ab).sum(0) * vv.sum(0))
    return value - (uu * vv * k.diag * l.diag).sum(0)


def _hsic(hadamard: Tensor, k: _Side, l: _Side, vectors: dict[str, Tensor], e: tuple[Tensor, Tensor, Tensor]
          ) -> Tensor:
    """``_weighted_unbiased_hsic`` per resample, term by term."""
    w, w2 = vectors["w"], vectors["w2"]
    pairs = _hadamard(hadamard, k, l, "w", "w", vectors)
    triples = (w * k.k_w * l.k_w).sum(0) - _hadamard(hadamard, k, l, "w", "w2", vectors)
    quads = ((w * k.k_w).sum(0) * (w * l.k_w).sum(0) - 4 * (w2 * k.k_w * l.k_w).sum(0)
             + 2 * _hadamard(hadamard, k, l, "w2", "w2", vectors))
    e2, e3, e4 = e
    return pairs / (2 * e2) + quads / (24 * e4) - 2 * triples / (6 * e3)


def _elementary(w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """e_2, e_3, e_4 of each resample's counts (columns) by Newton's identities, as the loop takes them."""
    p1, p2, p3, p4 = (w.pow(i).sum(0) for i in range(1, 5))
    e2 = (p1 * p1 - p2) / 2
    e3 = (e2 * p1 - p1 * p2 + p3) / 3
    e4 = (e3 * p1 - e2 * p2 + p1 * p3 - p4) / 4
    return e2, e3, e4


@register_bootstrap(cka_debiased_resampled)
def debiased_cka_bootstrap(x: Tensor, y: Tensor, *, kernel: str = "linear", threshold: float = 0.5,
                           debiased: bool = True) -> PreparedBootstrap | None:
    """Debiased CKA's batched bootstrap: ``cka_debiased_resampled``'s values on each resample."""
    if kernel != "linear":
        return _rbf_bootstrap(x, y, kernel, threshold)
    a, b = (_factor(t) for t in _checked(x, y, "linear", 0.5, True))
    n = a.shape[0]
    diag_g, diag_h = a.pow(2).sum(1), b.pow(2).sum(1)

    def _cka_debiased(counts: Tensor, memory_mb: float) -> tuple[Tensor, Tensor]:
        w = counts.T.contiguous()  # (n, resamples)
        s = (w > 0).double()
        w2 = w * w
        m = s.sum(0)
        vectors = {"w": w, "w2": w2}
        p = _products(a, b, s, w, w2, memory_mb)
        kx, ky = _Side(p["G"], diag_g, s, w, m), _Side(p["H"], diag_h, s, w, m)
        e = _elementary(w)
        xy, xx, yy = _hsic(p["GH"], kx, ky, vectors, e), _hsic(p["GG"], kx, kx, vectors, e), _hsic(p["HH"], ky, ky,
                                                                                                  vectors, e)
        # uncentred sizes of HSIC(X, X), HSIC(Y, Y): a centred value far below them lost its digits
        raw_x = (w * p["GG"][:, :w.shape[1]]).sum(0) / (2 * e[0])
        raw_y = (w * p["HH"][:, :w.shape[1]]).sum(0) / (2 * e[0])
        unsure = few_distinct(counts, 4) | ~(xx > CANCELLED * raw_x) | ~(yy > CANCELLED * raw_y)
        return torch.where(unsure, 0.0, xy / (xx * yy).clamp(min=1e-300).sqrt()), unsure

    return PreparedBootstrap(_cka_debiased, bytes_per_resample=8 * _BLOCK_TERMS * n, block_bytes=BLOCK_BYTES)


def _rbf_bootstrap(x: Tensor, y: Tensor, kernel: str, threshold: float) -> PreparedBootstrap:
    """RBF: the kernel does not move with centring, so no correction; each resample's bandwidth is its median
    (``_Median``, as ``cka_rbf``'s bootstrap counts it) and its kernels are read at its distinct items."""
    xc, yc = _checked(x, y, kernel, threshold, True)
    n = xc.shape[0]
    dx, dy = _squared_distances(xc), _squared_distances(yc)
    median_x, median_y = _Median(dx), _Median(dy)
    factor = -math.log2(math.e) / (2 * threshold ** 2)  # exp(-d2 / h) as exp2: vectorised in torch, exp is not

    def _cka_debiased_rbf(counts: Tensor, memory_mb: float) -> tuple[Tensor, Tensor]:
        (mx, zx), (my, zy) = median_x(counts), median_y(counts)
        unsure = few_distinct(counts, 4) | zx | zy | ~(mx > 0) | ~(my > 0)
        values = torch.zeros(counts.shape[0], dtype=torch.float64)
        for r in (~unsure).nonzero().flatten().tolist():
            items = counts[r].nonzero().flatten()
            k, l = (d2.index_select(0, items).index_select(1, items).mul_(factor / float(m[r])).exp2_()
                    for d2, m in ((dx, mx), (dy, my)))
            w = counts[r, items]
            xy, xx, yy = (_weighted_unbiased_hsic(a, b, w) for a, b in ((k, l), (k, k), (l, l)))
            if not bool(xx * yy > 0):
                unsure[r] = True  # the loop's NaN (or its value of two negative estimates)
                continue
            values[r] = xy / (xx * yy).sqrt()
        return values, unsure

    # held as RBF CKA's (``_resample_kernels``); working set: one resample's kernels over its ~0.64 n items and
    # the unbiased HSIC's copies of them (~6 m^2 float64)
    slices = median_x.before.shape[1] // n
    return PreparedBootstrap(_cka_debiased_rbf, bytes_per_resample=40 * n + 20 * slices * n, block_bytes=BLOCK_BYTES,
                             held_bytes=2 * (8 + 4 + 4 * slices) * n * n + 8 * 25 * n * n // 10)
