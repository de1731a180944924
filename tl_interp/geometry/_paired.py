"""Paired geometry: how paired states B (rejected, corrupted) relate to A (chosen, clean), per layer.

``paired(A, B)`` answers, for each layer, with permutation baselines of unrelated pairs (B's
rows re-paired at random, the same permutations for every statistic and layer):

- is B better explained by A plus one mean shift, by an orthogonal rotation of A, or by both?
  (relative residuals, see ``_fits``; lower is better; p-value: the true pairing fits better
  than re-paired states);
- how aligned is each pair (cosine, angle in degrees; mean with a bootstrap interval)?
- does the per-pair cosine track an external per-pair score (e.g. the log-prob ratio of the
  two responses)? Pearson, Spearman and Kendall with permutation p-values;
- do the differences B - A concentrate in a few directions (PCA share of the top k
  components), more than the differences of unrelated pairs?
"""

import functools
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from tl_interp._checks import checked
from tl_interp.errors import InputError, OptionError, SelectionError, ShapeError, TlInterpWarning
from tl_interp.geometry._correlation import CORRELATIONS, correlate
from tl_interp.geometry._fits import (difference_pca, max_components, rotation_residual, shift_residual,
                                     shift_rotation_residual)
from tl_interp.results import Provenance, Result, register_result, short
from tl_interp.stats import bootstrap_mean_ci, permutation_indices, permutation_test
from tl_interp.stats._inputs import check_finite, smallest_p_value, unit_scale
from tl_interp.stats._permutation import n_arrangements

__all__ = ["PairedGeometry", "paired"]

_FITS = {"shift": shift_residual, "rotation": rotation_residual, "shift_rotation": shift_rotation_residual}


@register_result
@dataclass(frozen=True, eq=False, repr=False)
class PairedGeometry(Result):
    """Per-layer paired geometry. ``values`` are the per-pair cosines ``(layer, pair)``.

    Layer-wise quantities are floats for ``(n, d)`` input and ``(layers,)`` tensors for
    ``(layers, n, d)`` input. Residuals are relative (``||B - fit(A)|| / ||B - mean(B)||``).
    """

    kind = "paired_geometry"

    def _layerwise(self, key: str) -> float | Tensor:
        value = self.extras[key]
        return float(value[0]) if bool(self.extras["single"]) else value

    @property
    def shift_residual(self) -> float | Tensor:
        return self._layerwise("shift_residual")

    @property
    def rotation_residual(self) -> float | Tensor:
        return self._layerwise("rotation_residual")

    @property
    def shift_rotation_residual(self) -> float | Tensor:
        return self._layerwise("shift_rotation_residual")

    @property
    def improvement(self) -> float | Tensor:
        """(shift - rotation) / shift: how much less a rotation leaves unexplained (> 0: rotation fits better)."""
        return self._layerwise("improvement")

    def baseline(self, fit: str) -> float | Tensor:
        """Mean relative residual of ``fit`` ("shift", "rotation", "shift_rotation") over re-paired states."""
        return self._layerwise(f"baseline_{self._fit(fit)}")

    def p_value(self, fit: str) -> float | Tensor:
        """P-value that the true pairing fits better (lower residual) than re-paired states."""
        return self._layerwise(f"p_{self._fit(fit)}")

    @staticmethod
    def _fit(fit: str) -> str:
        if fit not in _FITS:
            raise OptionError(f"fit={fit!r}; choose one of {', '.join(_FITS)}")
        return fit

    @property
    def cosine(self) -> Tensor:
        """Per-pair cosine ``(layer, pair)`` (``(pair,)`` for ``(n, d)`` input)."""
        return self.values[0] if bool(self.extras["single"]) else self.values

    @property
    def angles(self) -> Tensor:
        """Per-pair angle in degrees, shaped like ``cosine``."""
        return torch.rad2deg(torch.acos(self.cosine.clamp(-1.0, 1.0)))

    @property
    def mean_cosine(self) -> float | Tensor:
        return self._layerwise("mean_cosine")

    @property
    def cosine_interval(self) -> tuple[float | Tensor, float | Tensor]:
        """Bootstrap interval of the mean cosine over pairs."""
        return self._layerwise("cosine_low"), self._layerwise("cosine_high")

    @property
    def methods(self) -> tuple[str, ...]:
        """The correlation methods computed (none without a score)."""
        return tuple(m for m in CORRELATIONS if f"corr_{m}" in self.extras)

    def correlation(self, method: str = "spearman") -> float | Tensor:
        """Correlation of the per-pair cosine with the score (``None`` score: not computed)."""
        return self._layerwise(f"corr_{self._method(method)}")

    def correlation_p_value(self, method: str = "spearman") -> float | Tensor:
        """Two-sided permutation p-value of ``correlation(method)``."""
        return self._layerwise(f"corr_p_{self._method(method)}")

    def _method(self, method: str) -> str:
        if f"corr_{method}" not in self.extras:
            have = ", ".join(self.methods) or "none (paired() got no score)"
            raise OptionError(f"no {method!r} correlation in this result; it has {have}")
        return method

    @property
    def pca_explained(self) -> float | Tensor:
        """Share of the variance of the centred differences B - A in their top ``k`` components."""
        return self._layerwise("pca_explained")

    @property
    def baseline_pca_explained(self) -> float | Tensor:
        return self._layerwise("baseline_pca_explained")

    @property
    def pca_p_value(self) -> float | Tensor:
        return self._layerwise("p_pca")

    def _headline(self) -> str:
        e = self.extras
        cos, gain = e["mean_cosine"].double(), e["improvement"].double()
        if bool(e["single"]):
            return (f"{self.values.shape[1]} pairs; mean cosine {float(cos[0]):.3f}; rotation improves on shift by "
                    f"{float(gain[0]):.1%} (p={float(e['p_rotation'][0]):.3g})")
        best = int(gain.argmax())
        return (f"{self.values.shape[1]} pairs; mean cosine {float(cos.min()):.3f}..{float(cos.max()):.3f} over "
                f"{len(cos)} layers; rotation's largest improvement on shift {float(gain[best]):.1%} at layer "
                f"{short(self.label('layer', best), 12)} (p={float(e['p_rotation'][best]):.3g})")

    def _summary_lines(self) -> list[str]:
        e = self.extras
        lines = ["per layer: mean cosine [95% CI]; relative residual of shift / rotation (re-paired baseline, p)"]
        for i in range(self.values.shape[0]):
            lines.append(f"{short(self.label('layer', i), 12):>12}: cos {float(e['mean_cosine'][i]):.3f} "
                         f"[{float(e['cosine_low'][i]):.3f}, {float(e['cosine_high'][i]):.3f}]  shift "
                         f"{float(e['shift_residual'][i]):.3f} ({float(e['baseline_shift'][i]):.3f}, "
                         f"p={float(e['p_shift'][i]):.3g})  rotation {float(e['rotation_residual'][i]):.3f} "
                         f"({float(e['baseline_rotation'][i]):.3f}, p={float(e['p_rotation'][i]):.3g})")
        return lines

    def figure(self, **kwargs: Any) -> Any:
        """Per-layer lines: residuals against their baselines, mean cosine with its interval, correlations."""
        from tl_interp.geometry._figures import paired_figure

        return paired_figure(self, **kwargs)

    def angle_histogram(self, layer: int = -1, **kwargs: Any) -> Any:
        """Histogram of the per-pair angles at one layer."""
        from tl_interp.geometry._figures import angle_histogram

        return angle_histogram(self, layer, **kwargs)


def _states(A: Tensor, B: Tensor) -> tuple[Tensor, Tensor, bool]:
    if not isinstance(A, Tensor) or not isinstance(B, Tensor):
        raise InputError("paired: A and B are tensors of paired states, (n, d) or (layers, n, d)")
    if A.shape != B.shape:
        raise ShapeError(f"paired: A and B must have the same shape (the same pairs), got {tuple(A.shape)} and "
                         f"{tuple(B.shape)}")
    if A.ndim not in (2, 3):
        raise ShapeError(f"paired: states are (n, d) or (layers, n, d); got shape {tuple(A.shape)}")
    single = A.ndim == 2
    a, b = (t.detach().double().cpu()[None] if single else t.detach().double().cpu() for t in (A, B))
    if a.shape[1] < 3:
        raise InputError(f"paired: permutation tests and intervals need at least 3 pairs, got {a.shape[1]}")
    for name, t in (("A", a), ("B", b)):
        check_finite(t, f"paired: {name}", "remove or impute those pairs first")
    # one common power of two (exact): cosines and relative residuals are unchanged, squares can't overflow
    exponent = unit_scale(torch.stack([a, b]))[1]
    a, b = torch.ldexp(a, -exponent), torch.ldexp(b, -exponent)
    for name, t in (("A", a), ("B", b)):
        zero = (t.norm(dim=-1) == 0).nonzero()
        if len(zero):
            raise InputError(f"paired: {name} has zero vectors (layer {int(zero[0, 0])}, pair {int(zero[0, 1])}); "
                             "a cosine needs a direction")
    return a, b, single


def _warn_if_unreachable(n: int, n_permutations: int, alpha: float, two_sided: bool) -> None:
    """Warn when no permutation p-value of ``paired`` can go below ``alpha``, as ``stats.correct`` does."""
    arrangements = n_arrangements("pairings", n, n)
    floors = {"the fits and the difference PCA": smallest_p_value(arrangements, n_permutations, "greater")}
    if two_sided:
        floors["the two-sided score correlations"] = smallest_p_value(arrangements, n_permutations, "two-sided")
    stuck = {what: floor for what, floor in floors.items() if floor > alpha}
    if stuck:
        said = "; ".join(f"{what}: {floor:.3g}" for what, floor in stuck.items())
        warnings.warn(f"paired: with {n} pairs ({arrangements:.0f} distinct pairings) and {n_permutations} "
                      f"permutations, the smallest reachable p-value is above alpha {alpha} ({said}): those tests "
                      "can't reach significance, whatever the data. Use more pairs (or more permutations)",
                      TlInterpWarning, stacklevel=3)


@checked
def paired(A: Tensor, B: Tensor, *, score: Any = None, n_permutations: int = 1000, k: int | None = None,
           seed: int = 0, n_boot: int = 2000, alpha: float = 0.05, layer_labels: list[str] | None = None,
           model_id: str = "states", progress: bool = True) -> PairedGeometry:
    """Shift vs rotation fits, per-pair cosines, score correlations and difference PCA, per layer.

    Args:
        A, B: paired states ``(n, d)`` or ``(layers, n, d)`` (row i of A goes with row i of B).
        score: an external per-pair score ``(n,)`` (e.g. a log-prob ratio), or ``None``.
        n_permutations: re-pairings for the baselines and p-values (shared by every statistic).
        k: principal components of the differences (default ``min(5, min(n, d) - 1)``).
        seed: seed of the permutations and the bootstrap (recorded in provenance).
        n_boot, alpha: bootstrap resamples and 1 - coverage of the mean-cosine interval.
        layer_labels: a label per layer (default ``"0", "1", ...``).
        model_id: where the states came from, for provenance.
        progress: show a progress bar over layers.

    Returns:
        ``PairedGeometry`` with ``.shift_residual``, ``.rotation_residual``,
        ``.shift_rotation_residual``, ``.improvement``, ``.baseline(fit)``, ``.p_value(fit)``,
        ``.cosine``, ``.angles``, ``.correlation(method)``, ``.pca_explained`` and figures.

    Example:
        >>> import torch
        >>> A = torch.randn(20, 6, generator=torch.Generator().manual_seed(0))
        >>> Q = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(1))).Q
        >>> g = paired(A, A @ Q, n_permutations=199, progress=False)
        >>> g.rotation_residual < 1e-6 < 0.5 < g.shift_residual
        True
    """
    a, b, single = _states(A, B)
    layers, n, d = a.shape
    top = max_components(n, d)  # the centred differences span at most min(n - 1, d) directions
    k = min(5, top - 1) if k is None else k
    if not 1 <= k < top:
        raise SelectionError(f"paired: k={k} principal components of {n} pairs in {d} dimensions; the centred "
                             f"differences span at most min(n - 1, d) = {top} directions, so choose 1 <= k < "
                             f"{top} (a k that explains every direction gives a share of 1 for every pairing)")
    scores = None
    if score is not None:
        scores = torch.as_tensor(score).detach().double().flatten().cpu()
        if scores.numel() != n:
            raise ShapeError(f"paired: score has {scores.numel()} values for {n} pairs; give one score per pair")
        check_finite(scores, "paired: score", "give every pair a finite score")
    labels = layer_labels or [str(i) for i in range(layers)]
    if len(labels) != layers:
        raise ShapeError(f"paired: {len(labels)} layer labels for {layers} layers")
    _warn_if_unreachable(n, n_permutations, alpha, scores is not None)
    perms = permutation_indices(n, n_permutations, seed=seed)
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    rows: dict[str, list[Tensor]] = {}

    def keep(key: str, value: Tensor) -> None:
        rows.setdefault(key, []).append(torch.as_tensor(value, dtype=torch.float64).reshape(()))

    pca = functools.partial(difference_pca, k=k)
    for layer in tqdm(range(layers), desc="paired geometry", disable=not progress or layers < 2):
        for fit, statistic in _FITS.items():
            test = permutation_test(statistic, a[layer], b[layer], permutations=perms, alternative="less")
            keep(f"{fit}_residual", test.statistic)
            keep(f"baseline_{fit}", test.null.mean())
            keep(f"p_{fit}", test.p_value)
        test = permutation_test(pca, a[layer], b[layer], permutations=perms, alternative="greater")
        keep("pca_explained", test.statistic)
        keep("baseline_pca_explained", test.null.mean())
        keep("p_pca", test.p_value)
        if scores is not None:
            for method, test in correlate(cosine[layer], scores, permutations=perms).items():
                keep(f"corr_{method}", test.statistic)
                keep(f"corr_p_{method}", test.p_value)
    extras = {key: torch.stack(values) for key, values in rows.items()}
    extras["improvement"] = (extras["shift_residual"] - extras["rotation_residual"]) / extras["shift_residual"]
    extras["mean_cosine"] = cosine.mean(1)
    extras["cosine_low"], extras["cosine_high"] = bootstrap_mean_ci(cosine, n_boot=n_boot, alpha=alpha, seed=seed)
    extras["single"] = torch.tensor(single)
    if scores is not None:
        extras["score"] = scores
    prov = Provenance.make(model_id, seed=seed, settings={"n_permutations": n_permutations, "k": k, "n_boot": n_boot,
                                                          "alpha": alpha, "n_pairs": n, "d": d})
    return PairedGeometry(cosine, ("layer", "pair"), "cosine", prov, {"layer": tuple(labels)}, extras)
