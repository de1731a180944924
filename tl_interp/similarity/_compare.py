"""``compare``: several similarity scores of X and Y, each with its random-pairing null and interval.

For every metric: the score, its null distribution over B random reorderings of Y's rows (the
same permutations for every metric, each metric's batched null from ``ti.stats``), the
p-value (1 + #{null >= score}) / (B + 1), and a percentile bootstrap interval over rows (the
same resamples for every metric; RSA and mutual kNN leave out pairs of copies of one row),
computed in batches from what resampling does not change (``_resample_linear``, ``_resample_cca``,
``_resample_kernels``, ``_resample_debiased``, ``_resample_pairs``, ``_resample_kendall``: equal to one metric call per
resample up to rounding; docs/similarity.md). The work runs one
metric at a time in blocks sized by ``memory_mb``; long work says how long it will take first.

Resampled rows repeat items, and CKA, CCA and Procrustes scores grow as the number of distinct
items shrinks (their small-sample bias), so at small n the percentile interval can sit above
the score: ``compare`` then warns with the numbers, and records the shift as ``boot_bias``.
The permutation null is the test; the interval is a spread, trustworthy when its bias is small.
Debiased CKA's unbiased HSIC assumes distinct items, so its resamples are read as counts over
their distinct items (copies weight an item and never pair with it); it has no such bias.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
import difflib
import functools
import inspect
import time
import warnings
from typing import Any, ClassVar

import torch
from torch import Tensor

from tl_interp._checks import checked, renamed
from tl_interp.errors import InputError, OptionError, TlInterpError, TlInterpWarning
from tl_interp.results import Provenance, Result, prompt_hash, register_result
from tl_interp.similarity._cca import pwcca, svcca
from tl_interp.similarity._inputs import ArrayLike, paired_rows
from tl_interp.similarity._kernels import cka, cka_debiased_resampled
from tl_interp.similarity._neighbors import knn_chance, knn_resampled, mutual_knn
from tl_interp.similarity._procrustes import procrustes
from tl_interp.similarity._rsa import rsa, rsa_resampled
from tl_interp.similarity._schedule import Stage, run_stages
from tl_interp.stats import bootstrap_indices, percentile_interval, permutation_indices, permutation_p_value
from tl_interp.stats._bootstrap import bootstrap_evaluator
from tl_interp.stats._inputs import check_count, check_finite, smallest_p_value, unit_scale
from tl_interp.stats._permutation import n_arrangements, null_evaluator

# the batched bootstraps register themselves with ti.stats on import
from tl_interp.similarity import _resample_cca, _resample_debiased, _resample_kernels, _resample_pairs  # noqa: F401

__all__ = ["METRICS", "SimilarityResult", "compare"]



# name -> (metric, fixed options, resampled form taking source row ids, or None)
METRICS: dict[str, tuple[Callable[..., float], dict[str, Any], Callable[..., float] | None]] = {
    "cka": (cka, {}, None),
    "cka_rbf": (cka, {"kernel": "rbf"}, None),
    "cka_debiased": (cka, {"debiased": True}, cka_debiased_resampled),
    "svcca": (svcca, {}, None),
    "pwcca": (pwcca, {}, None),
    "procrustes": (procrustes, {}, None),
    "rsa": (rsa, {}, rsa_resampled),
    "mutual_knn": (mutual_knn, {}, knn_resampled),
}
DEFAULT_METRICS = ("cka", "svcca", "procrustes", "rsa", "mutual_knn")
_ANNOUNCE_LOOP_SECONDS = 30.0  # work that would take this long as a loop is timed and announced first


@register_result
@dataclass(frozen=True, eq=False, repr=False)
class SimilarityResult(Result):
    """Scores per metric (axis ``"metric"``) with extras ``p_value``, ``ci_low``, ``ci_high``,
    ``boot_bias`` (mean resampled score - score), ``chance`` (NaN where a metric has no
    closed-form chance level) and ``null`` (metric, B)."""

    kind: ClassVar[str] = "similarity"

    def score(self, metric: str) -> dict[str, float]:
        """One metric's score, p-value, interval, chance level and null mean."""
        i = self.labels["metric"].index(metric)
        return {"score": float(self.values[i]), "p_value": float(self.extras["p_value"][i]),
                "ci_low": float(self.extras["ci_low"][i]), "ci_high": float(self.extras["ci_high"][i]),
                "boot_bias": float(self.extras["boot_bias"][i]),
                "chance": float(self.extras["chance"][i]), "null_mean": float(self.extras["null"][i].mean()),
                "null_q95": float(self.extras["null"][i].quantile(0.95))}

    def _headline(self) -> str:
        names = self.labels["metric"]
        scores = ", ".join(f"{n} {float(self.values[i]):.3f} (p={float(self.extras['p_value'][i]):.3g})"
                           for i, n in enumerate(names[:6]))
        return scores + (f", ... {len(names) - 6} more" if len(names) > 6 else "")

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
        raise OptionError(f"compare: unknown measures {unknown}; choose from {tuple(METRICS)}")
    if len(set(metrics)) != len(metrics) or not metrics:
        raise OptionError(f"compare: measures must be distinct names, got {tuple(metrics)}")
    out = []
    for name in metrics:
        fn, fixed, resampled = METRICS[name]
        _check_options(name, fn, fixed, options.get(name, {}))
        kwargs = {**fixed, **options.get(name, {})}
        out.append((name, functools.partial(fn, **kwargs), resampled and functools.partial(resampled, **kwargs)))
    return out


def _check_options(name: str, fn: Callable[..., float], fixed: Mapping[str, Any], given: Any) -> None:
    """Each metric's options must be keyword options of its function (a typo would be a bare TypeError)."""
    valid = tuple(p.name for p in inspect.signature(fn).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY)
    if not isinstance(given, Mapping):
        raise OptionError(f"compare: options[{name!r}] must be a dict of keyword options of {fn.__name__}, got "
                          f"{type(given).__name__}; valid options: {valid}")
    unknown = [k for k in given if k not in valid]
    if unknown:
        hints = [f"{k!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(k, valid, 1)) else repr(k)
                 for k in unknown]
        raise OptionError(f"compare: unknown option {', '.join(hints)} for metric {name!r} ({fn.__name__}); valid "
                          f"options: {valid}")
    clash = [k for k in given if k in fixed and given[k] != fixed[k]]
    if clash:
        raise OptionError(f"compare: metric {name!r} is {fn.__name__} with {dict(fixed)}; options {clash} can't change "
                          f"that (use the metric whose name says it, e.g. 'cka' vs 'cka_rbf')")


def _stages(plan: list, x: Tensor, y: Tensor, perms: Tensor, index: Tensor, memory_mb: float) -> list[Stage]:
    """Per metric: its permutation null and its bootstrap, built when their stage runs."""
    stages = []
    for name, stat, resampled in plan:
        def _null(stat: Any = stat) -> tuple[Callable[[Tensor, int], Tensor], int]:
            evaluate, chunk, _ = null_evaluator(stat, "pairings", x, y)
            return (lambda block, start: evaluate(block)), chunk

        def _boot(name: str = name, stat: Any = stat, resampled: Any = resampled
                  ) -> tuple[Callable[[Tensor, int], Tensor], int]:
            return bootstrap_evaluator(resampled or stat, x, y, one=_one_resample(name, stat, resampled, x, y),
                                       memory_mb=memory_mb)

        stages += [Stage(f"{name} null", perms, _null), Stage(f"{name} bootstrap", index, _boot)]
    return stages


def _one_resample(name: str, stat: Any, resampled: Any, x: Tensor, y: Tensor) -> Callable[[int, Tensor], float]:
    """The loop's value of one bootstrap resample (source row ids ``rows``), with its error named."""
    def _one(b: int, rows: Tensor) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # one warning per resample would bury the real ones
            try:
                return resampled(x[rows], y[rows], rows) if resampled else stat(x[rows], y[rows])
            except TlInterpError as err:
                raise InputError(f"compare: bootstrap resample {b} of {name} failed: {err}. Resamples repeat "
                                 "rows, so they hold fewer distinct items than X; lower the metric's dimensions "
                                 "(e.g. options={'svcca': {'dims': ...}}) or use more rows") from err
    return _one


def _intervals(plan: list, boots: list[Tensor], values: Tensor, alpha: float) -> tuple[Tensor, Tensor, Tensor]:
    """Percentile interval and mean shift per metric over the resamples it could score."""
    low, high, bias = [], [], []
    for (name, _, _), b, v in zip(plan, boots, values):
        ok = b[~torch.isnan(b)]
        if ok.numel() < b.numel():  # debiased CKA: < 4 distinct items, or a non-positive weighted HSIC
            warnings.warn(f"compare: {b.numel() - ok.numel()} of {b.numel()} bootstrap resamples of {name} have no "
                          "score; its interval uses the others", TlInterpWarning, stacklevel=4)
        if ok.numel() == 0:
            raise InputError(f"compare: no bootstrap resample of {name} could be scored; use more rows")
        lo, hi = percentile_interval(ok, alpha)
        low.append(lo)
        high.append(hi)
        bias.append(ok.mean() - v)
    return torch.stack(low), torch.stack(high), torch.stack(bias)


_SAME_SCORE = 1e-9  # relative: scores this close are the same score, computed in another order


def _warn_if_shifted(plan: list, values: Tensor, low: Tensor, high: Tensor, bias: Tensor, n: int) -> None:
    # Resamples repeat rows, and most of these scores rise as the number of distinct items falls
    # (small-sample bias), so the resampled scores can sit above the score itself. A score that
    # differs from an end of its interval by rounding alone (1.0 vs 1.0000000000000002: the
    # batched resamples sum in another order) is inside it.
    for (name, _, _), v, lo, hi, b in zip(plan, values.tolist(), low.tolist(), high.tolist(), bias.tolist()):
        tol = _SAME_SCORE * max(1.0, abs(v))
        if not lo - tol <= v <= hi + tol:
            warnings.warn(f"compare: the bootstrap interval of {name} [{lo:.3f}, {hi:.3f}] does not contain its score "
                          f"{v:.3f} (resampled scores are shifted by {b:+.3f} on average): {name} is biased at n={n} "
                          "rows, so the interval is not a confidence interval for it; judge it by its permutation "
                          "null (for CKA, also read cka_debiased against its null)", TlInterpWarning, stacklevel=4)


def _warn_if_unreachable(n: int, n_permutations: int, alpha: float) -> None:
    floor = smallest_p_value(n_arrangements("pairings", n, n), n_permutations, "greater")
    if floor > alpha:
        warnings.warn(f"compare: with {n} rows and {n_permutations} permutations no p-value can go below {floor:.3g} "
                      f"(max(1 / (B + 1), 1 / {n}!)) > alpha {alpha}: no metric can reach significance, whatever the "
                      "data. Use more rows or more permutations", TlInterpWarning, stacklevel=3)


@renamed(metrics="measures")
@checked
def compare(X: ArrayLike, Y: ArrayLike, *, measures: Sequence[str] = DEFAULT_METRICS,
            options: Mapping[str, Mapping[str, Any]] | None = None, n_permutations: int = 1000,
            n_boot: int = 1000, alpha: float = 0.05, seed: int = 0, model_id: str = "activations",
            memory_mb: float = 1024.0, progress: bool = True) -> SimilarityResult:
    """Similarity scores of X ``(n, d1)`` and Y ``(n, d2)`` with random-pairing nulls and bootstrap intervals.

    Args:
        X, Y: activations of the same n items (rows paired), e.g. two models or two layers.
        measures: similarity measures, names from ``METRICS``: ``"cka"``, ``"cka_rbf"``, ``"cka_debiased"``,
            ``"svcca"``, ``"pwcca"``, ``"procrustes"``, ``"rsa"``, ``"mutual_knn"``.
        options: keyword options per metric, e.g. ``{"svcca": {"dims": 10}, "mutual_knn": {"k": 5}}``.
        n_permutations: random reorderings of Y's rows for every null (shared by all metrics).
        n_boot: bootstrap resamples of rows for the intervals (shared by all metrics).
        alpha: 1 - coverage of the intervals.
        seed: seed of the permutations and of the resamples (recorded in provenance).
        model_id: what X and Y are, for provenance (``"smollm2-135m L10 vs ordinal-4l L2"``).
        memory_mb: budget of one block of batched resamples, their temporaries included (what a
            metric computes once, e.g. the n x n Gram matrices, comes on top and is held for one
            metric at a time; docs/similarity.md).
        progress: show a progress bar when the work lasts more than 2 s; long work (more than 30 s
            at one metric call per permutation and resample) is first timed on a few rows of each
            stage and its estimated duration printed to stderr before it runs.

    Returns:
        ``SimilarityResult`` over axis ``"metric"``; ``.summary()``, ``.figure()``, ``.to_frame()``.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> X = torch.randn(40, 6, generator=g)
        >>> res = compare(X, X + 0.5 * torch.randn(40, 6, generator=g), measures=("cka", "rsa"), n_permutations=99,
        ...               n_boot=50)
        >>> res.labels["metric"], [round(p, 2) for p in res.extras["p_value"].tolist()]
        (('cka', 'rsa'), [0.01, 0.01])
    """
    check_count(n_permutations, "n_permutations")
    check_count(n_boot, "n_boot")
    if not memory_mb > 0:
        raise OptionError(f"compare: memory_mb must be positive, got {memory_mb}")
    options = dict(options or {})
    plan = _resolved(measures, options)
    raw_x, raw_y = paired_rows(X, Y, "compare", min_rows=3, rescale=False)
    x, y = unit_scale(raw_x)[0], unit_scale(raw_y)[0]  # every metric is scale-invariant (_inputs)
    n = x.shape[0]
    _warn_if_unreachable(n, n_permutations, alpha)
    start = time.perf_counter()
    scores = [stat(x, y) for _, stat, _ in plan]  # every pitfall is raised here, before the long work
    loop_seconds = (time.perf_counter() - start) * (n_permutations + n_boot)
    perms = permutation_indices(n, n_permutations, seed=seed)
    index = bootstrap_indices(n, n_boot, seed=seed)
    parts = run_stages(_stages(plan, x, y, perms, index, memory_mb), what="compare", progress=progress,
                       announce=loop_seconds > _ANNOUNCE_LOOP_SECONDS)
    values = torch.tensor(scores, dtype=torch.float64)
    null, boots = torch.stack(parts[0::2]), parts[1::2]
    for (name, _, _), v, nl in zip(plan, values, null):
        check_finite(nl, f"compare: the null of {name} (its value under each of the {n_permutations} permutations)",
                     "a p-value against non-finite null values means nothing")
    low, high, bias = _intervals(plan, boots, values, alpha)
    _warn_if_shifted(plan, values, low, high, bias, n)
    p = torch.stack([permutation_p_value(nl, v, "greater") for v, nl in zip(values, null)])
    k = {**METRICS["mutual_knn"][1], **options.get("mutual_knn", {})}.get("k", 10)
    chance = torch.tensor([knn_chance(n, k) if name == "mutual_knn" else float("nan") for name, _, _ in plan],
                          dtype=torch.float64)
    settings = {"n": n, "d_x": x.shape[1], "d_y": y.shape[1], "n_permutations": n_permutations, "n_boot": n_boot,
                "alpha": alpha, "options": {k2: dict(v) for k2, v in options.items()}}
    provenance = Provenance.make(model_id, prompt_hash=prompt_hash(raw_x, raw_y), seed=seed, settings=settings)
    return SimilarityResult(values=values, axes=("metric",), metric="similarity", provenance=provenance,
                            labels={"metric": tuple(name for name, _, _ in plan)},
                            extras={"p_value": p, "ci_low": low, "ci_high": high, "boot_bias": bias, "chance": chance,
                                    "null": null})
