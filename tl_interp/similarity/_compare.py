"""``compare``: several similarity scores of X and Y, each with its random-pairing null and interval.

For every metric: the score, its null distribution over B random reorderings of Y's rows (the
same permutations for every metric, vectorised through ``ti.stats.permutation_test``), the
p-value (1 + #{null >= score}) / (B + 1), and a percentile bootstrap interval over rows (the
same resamples for every metric; RSA and mutual kNN leave out pairs of copies of one row).
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
import functools
import warnings
from typing import Any, ClassVar

import torch
from beartype import beartype
from torch import Tensor
from tqdm.auto import tqdm

from tl_interp.errors import InputError, OptionError, TlInterpError
from tl_interp.results import Provenance, Result, prompt_hash, register_result
from tl_interp.similarity._cca import pwcca, svcca
from tl_interp.similarity._inputs import ArrayLike, paired_rows
from tl_interp.similarity._kernels import cka
from tl_interp.similarity._neighbors import knn_chance, knn_resampled, mutual_knn
from tl_interp.similarity._procrustes import procrustes
from tl_interp.similarity._rsa import rsa, rsa_resampled
from tl_interp.stats import bootstrap_indices, percentile_interval, permutation_indices, permutation_test
from tl_interp.stats._inputs import check_count

__all__ = ["METRICS", "SimilarityResult", "compare"]

# name -> (metric, fixed options, resampled form taking source row ids, or None)
METRICS: dict[str, tuple[Callable[..., float], dict[str, Any], Callable[..., float] | None]] = {
    "cka": (cka, {}, None),
    "cka_rbf": (cka, {"kernel": "rbf"}, None),
    "cka_debiased": (cka, {"debiased": True}, None),
    "svcca": (svcca, {}, None),
    "pwcca": (pwcca, {}, None),
    "procrustes": (procrustes, {}, None),
    "rsa": (rsa, {}, rsa_resampled),
    "mutual_knn": (mutual_knn, {}, knn_resampled),
}
DEFAULT_METRICS = ("cka", "svcca", "procrustes", "rsa", "mutual_knn")


@register_result
@dataclass(frozen=True, eq=False)
class SimilarityResult(Result):
    """Scores per metric (axis ``"metric"``) with extras ``p_value``, ``ci_low``, ``ci_high``,
    ``chance`` (NaN where a metric has no closed-form chance level) and ``null`` (metric, B)."""

    kind: ClassVar[str] = "similarity"

    def score(self, metric: str) -> dict[str, float]:
        """One metric's score, p-value, interval, chance level and null mean."""
        i = self.labels["metric"].index(metric)
        return {"score": float(self.values[i]), "p_value": float(self.extras["p_value"][i]),
                "ci_low": float(self.extras["ci_low"][i]), "ci_high": float(self.extras["ci_high"][i]),
                "chance": float(self.extras["chance"][i]), "null_mean": float(self.extras["null"][i].mean()),
                "null_q95": float(self.extras["null"][i].quantile(0.95))}

    def summary(self) -> str:
        """One line per metric: score [interval], null mean and 95th percentile, p."""
        lines = []
        for name in self.labels["metric"]:
            s = self.score(name)
            lines.append(f"{name:>12}: {s['score']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]  null "
                         f"{s['null_mean']:.3f} (95% {s['null_q95']:.3f})  p={s['p_value']:.4f}")
        return "\n".join(lines)

    def figure(self, **kwargs: Any) -> Any:
        """Each metric's score (a vertical line) against its null histogram (plotly, imported lazily)."""
        from tl_interp.similarity._figure import null_figure

        return null_figure(self, **kwargs)


def _resolved(metrics: Sequence[str], options: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, Any, Any]]:
    unknown = [m for m in list(metrics) + list(options) if m not in METRICS]
    if unknown:
        raise OptionError(f"compare: unknown metrics {unknown}; choose from {tuple(METRICS)}")
    if not metrics or len(set(metrics)) != len(metrics):
        raise OptionError(f"compare: metrics must be distinct names, got {tuple(metrics)}")
    out = []
    for name in metrics:
        fn, fixed, resampled = METRICS[name]
        kwargs = {**fixed, **options.get(name, {})}
        out.append((name, functools.partial(fn, **kwargs), resampled and functools.partial(resampled, **kwargs)))
    return out


def _bootstrap(stat: Any, resampled: Any, x: Tensor, y: Tensor, index: Tensor, name: str, bar: Any) -> Tensor:
    values = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one warning per resample would bury the real ones
        for b, rows in enumerate(index):
            try:
                values.append(resampled(x[rows], y[rows], rows) if resampled else stat(x[rows], y[rows]))
            except TlInterpError as err:
                raise InputError(f"compare: bootstrap resample {b} of {name} failed: {err}. Resamples repeat "
                                 "rows, so they hold fewer distinct items; lower the metric's dimensions "
                                 "or pass n_boot with more rows") from err
            bar.update(1)
    return torch.tensor(values, dtype=torch.float64)


@beartype
def compare(X: ArrayLike, Y: ArrayLike, *, metrics: Sequence[str] = DEFAULT_METRICS,
            options: Mapping[str, Mapping[str, Any]] | None = None, n_permutations: int = 1000,
            n_boot: int = 1000, alpha: float = 0.05, seed: int = 0, model_id: str = "activations",
            progress: bool = False) -> SimilarityResult:
    """Similarity scores of X ``(n, d1)`` and Y ``(n, d2)`` with random-pairing nulls and bootstrap intervals.

    Args:
        X, Y: activations of the same n items (rows paired), e.g. two models or two layers.
        metrics: names from ``METRICS``: ``"cka"``, ``"cka_rbf"``, ``"cka_debiased"``, ``"svcca"``,
            ``"pwcca"``, ``"procrustes"``, ``"rsa"``, ``"mutual_knn"``.
        options: keyword options per metric, e.g. ``{"svcca": {"dims": 10}, "mutual_knn": {"k": 5}}``.
        n_permutations: random reorderings of Y's rows for every null (shared by all metrics).
        n_boot: bootstrap resamples of rows for the intervals (shared by all metrics).
        alpha: 1 - coverage of the intervals.
        seed: seed of the permutations and of the resamples (recorded in provenance).
        model_id: what X and Y are, for provenance (``"smollm2-135m L10 vs ordinal-4l L2"``).
        progress: show progress bars.

    Returns:
        ``SimilarityResult`` over axis ``"metric"``; ``.summary()``, ``.figure()``, ``.to_frame()``.

    Example:
        >>> import torch
        >>> X = torch.randn(40, 6, generator=torch.Generator().manual_seed(0))
        >>> res = compare(X, X + 0.5 * torch.randn(40, 6), metrics=("cka", "rsa"), n_permutations=99, n_boot=50)
        >>> res.labels["metric"], [round(p, 2) for p in res.extras["p_value"].tolist()]
        (('cka', 'rsa'), [0.01, 0.01])
    """
    check_count(n_permutations, "n_permutations")
    check_count(n_boot, "n_boot")
    options = dict(options or {})
    plan = _resolved(metrics, options)
    x, y = paired_rows(X, Y, "compare", min_rows=3)
    n = x.shape[0]
    scores = [stat(x, y) for _, stat, _ in plan]  # every pitfall is raised here, before the long work
    perms = permutation_indices(n, n_permutations, seed=seed)
    nulls = [permutation_test(stat, x, y, permutations=perms, progress=progress).null for _, stat, _ in plan]
    index = bootstrap_indices(n, n_boot, seed=seed)
    bar = tqdm(total=n_boot * len(plan), desc="bootstrap", disable=not progress)
    boots = [_bootstrap(stat, resampled, x, y, index, name, bar) for name, stat, resampled in plan]
    bar.close()
    values = torch.tensor(scores, dtype=torch.float64)
    null = torch.stack(nulls)
    low, high = percentile_interval(torch.stack(boots), alpha, dim=1)
    gamma = values.abs()[:, None] * torch.finfo(torch.float64).eps * 100
    p = (1 + (null >= values[:, None] - gamma).sum(1).double()) / (n_permutations + 1)
    k = {**METRICS["mutual_knn"][1], **options.get("mutual_knn", {})}.get("k", 10)
    chance = torch.tensor([knn_chance(n, k) if name == "mutual_knn" else float("nan") for name, _, _ in plan],
                          dtype=torch.float64)
    settings = {"n": n, "d_x": x.shape[1], "d_y": y.shape[1], "n_permutations": n_permutations, "n_boot": n_boot,
                "alpha": alpha, "options": {k2: dict(v) for k2, v in options.items()}}
    provenance = Provenance.make(model_id, prompt_hash=prompt_hash(x, y), seed=seed, settings=settings)
    return SimilarityResult(values=values, axes=("metric",), metric="similarity", provenance=provenance,
                            labels={"metric": tuple(name for name, _, _ in plan)},
                            extras={"p_value": p, "ci_low": low, "ci_high": high, "chance": chance, "null": null})
