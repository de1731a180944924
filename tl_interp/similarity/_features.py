"""Compare the feature spaces of two SAEs (or any two dictionaries of unit directions) across models.

The method of seed 003, as in Lan, Torr, Meek, Khakzar, Krueger & Barez 2024 ("Sparse
autoencoders reveal universal feature spaces across LLMs", arXiv:2410.06981):

1. **Pair** the features of A and B by the correlation of their activations over the same
   inputs (``match_units``: one-to-one Hungarian, or each A feature's best B partner); features
   that never vary on the inputs (dead there) cannot be paired and are left out.
2. The paired features' **decoder directions** become two matrices ``(k, d_a)`` and ``(k, d_b)``
   whose rows are paired: row i of each is one feature pair.
3. **Compare** them with the representation metrics (``compare``: SVCCA, RSA, Procrustes, ...),
   each against its **random-pairing null**: the null reorders B's rows, i.e. pairs the same
   features at random. So the test asks whether the pairing found by activations also aligns
   the decoder geometry, beyond any pairing of the same directions.
4. **Jaccard** of activity under the pairing (``paired_jaccard``): on each input, the set of
   paired features active in A against the set active in B (through the pairing), averaged
   over inputs; its null uses the very same random pairings.

A pairing chosen by activation correlation makes the activations it was chosen on agree by
construction, so a Jaccard score on those inputs beats random pairings whatever the models
share. ``feature_spaces`` therefore pairs on the first inputs and reads Jaccard on the last
``heldout`` share of them (``heldout=0`` reuses the pairing's inputs and says so). The decoder
metrics test something the pairing never saw (the geometry of the directions).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from tl_interp._checks import checked, renamed
from tl_interp.errors import InputError, OptionError, ShapeError
from tl_interp.results import Result, bounded, register_result, short
from tl_interp.similarity._compare import METRICS, SimilarityResult, compare
from tl_interp.similarity._match import UnitMatch, match_units
from tl_interp.stats import PermutationTest, PreparedNull, permutation_indices, permutation_test, register_null
from tl_interp.stats._inputs import ArrayLike, as_float64, check_count

__all__ = ["FeatureSpaces", "feature_spaces", "paired_jaccard"]

DEFAULT_METRICS = ("svcca", "rsa", "procrustes")
_SVCCA_DIMS = 20  # directions kept per side by default (p + q must stay below the number of pairs)


def _active_sets(X: ArrayLike, Y: ArrayLike) -> tuple[Tensor, Tensor]:
    x, y = as_float64(X, "paired_jaccard: X"), as_float64(Y, "paired_jaccard: Y")
    if x.ndim != 2 or x.shape != y.shape:
        raise ShapeError(f"paired_jaccard: X and Y must be (k paired features, n inputs) of one shape, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    a, b = x > 0, y > 0
    live = (a | b).any(0)  # inputs where neither side fires a paired feature have no Jaccard (0/0)
    if not bool(live.any()):
        raise InputError("paired_jaccard: no paired feature is active on any input; nothing to compare")
    return a[:, live].double(), b[:, live].double()


def _jaccard_of(a: Tensor, b: Tensor, sizes: Tensor) -> Tensor:
    inter = (a * b).sum(-2)  # (..., n)
    return (inter / (sizes - inter)).mean(-1)


@checked
def paired_jaccard(X: ArrayLike, Y: ArrayLike) -> float:
    """Mean over inputs of the Jaccard index of the paired features active (> 0) in X and in Y.

    Args:
        X, Y: activations ``(k, n)`` of k paired features (row i of X is paired with row i of Y)
            over the same n inputs. Inputs where no paired feature fires on either side are skipped.

    Returns:
        The mean Jaccard index in [0, 1]; 1 when paired features always fire together.

    Example:
        >>> import torch
        >>> X = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
        >>> paired_jaccard(X, torch.tensor([[3.0, 0.0], [0.0, 0.0], [0.0, 1.0]]))
        0.5
    """
    a, b = _active_sets(X, Y)
    return float(_jaccard_of(a, b, a.sum(0) + b.sum(0)))


@register_null(paired_jaccard)
def _paired_jaccard_null(x: Tensor, y: Tensor) -> PreparedNull:
    a, b = _active_sets(x, y)
    sizes = a.sum(0) + b.sum(0)  # |A_i| + |B_i| does not change when B's features are re-paired

    def _paired_jaccard_permuted(perms: Tensor) -> Tensor:
        return _jaccard_of(a, b[perms], sizes)

    return PreparedNull(_paired_jaccard_permuted, max(1, (1 << 24) // b.numel()))


@register_result
@dataclass(frozen=True, eq=False, repr=False)
class FeatureSpaces(Result):
    """Two feature spaces compared through an activation pairing: a ``Result`` with one score per
    measure (axis ``"measure"``: the decoder metrics, then ``"jaccard"``) and extras ``p_value``,
    ``null_mean``, ``null_q95`` per measure; it saves and loads like every result.

    Attributes (read from the extras, so a loaded result has them too):
        match: every pair ``match_units`` found (before ``min_correlation``).
        pairs: the ``(k, 2)`` pairs compared (feature of A, feature of B).
        correlations: their activation correlations ``(k,)``.
        similarity: the decoder metrics with their random-pairing nulls (``SimilarityResult``).
        jaccard: ``paired_jaccard`` of the paired codes with the same random pairings
            (``PermutationTest``: statistic, p_value, null).
        settings: how it was run (sizes, options, seed).
    """

    kind: ClassVar[str] = "feature_spaces"
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, match: UnitMatch, pairs: Tensor, correlations: Tensor, similarity: SimilarityResult,
           jaccard: PermutationTest, settings: dict[str, Any]) -> "FeatureSpaces":
        """The result of ``feature_spaces`` from its parts (each kept in the extras)."""
        measures = (*similarity.labels["metric"], "jaccard")
        rows = [{k: v for k, v in similarity.score(m).items() if k in _SCORES} for m in similarity.labels["metric"]]
        rows.append({"score": float(jaccard.statistic), "null_mean": float(jaccard.null.mean()),
                     "null_q95": float(jaccard.null.quantile(0.95)), "p_value": float(jaccard.p_value)})
        column = {k: torch.tensor([row[k] for row in rows], dtype=torch.float64) for k in _SCORES}
        extras = {k: column[k] for k in _SCORES[1:]}
        extras.update({"pairs": pairs, "correlations": correlations, "match.pairs": match.pairs,
                       "match.correlations": match.correlations, "match.constant_a": match.constant_a,
                       "match.constant_b": match.constant_b, "jaccard.statistic": jaccard.statistic,
                       "jaccard.p_value": jaccard.p_value, "jaccard.null": jaccard.null,
                       "similarity.values": similarity.values})
        extras.update({f"similarity.{k}": v for k, v in similarity.extras.items()})
        meta = {"settings": settings, "match_method": match.method,
                "similarity": {"axes": list(similarity.axes), "metric": similarity.metric,
                               "labels": {k: list(v) for k, v in similarity.labels.items()},
                               "extras": list(similarity.extras), "extra": similarity._extra_meta()},
                "jaccard": {k: getattr(jaccard, k) for k in ("n_permutations", "kind", "alternative", "seed",
                                                             "vectorized")}}
        return cls(values=column["score"], axes=("measure",), metric="score", provenance=similarity.provenance,
                   labels={"measure": measures}, extras=extras, meta=meta)

    @property
    def settings(self) -> dict[str, Any]:
        return self.meta["settings"]

    @property
    def pairs(self) -> Tensor:
        return self.extras["pairs"]

    @property
    def correlations(self) -> Tensor:
        return self.extras["correlations"]

    @property
    def match(self) -> UnitMatch:
        e = self.extras
        return UnitMatch(e["match.pairs"], e["match.correlations"], e["match.constant_a"], e["match.constant_b"],
                         self.meta["match_method"])

    @property
    def similarity(self) -> SimilarityResult:
        m = self.meta["similarity"]
        return SimilarityResult._rebuild(
            extra_meta=m["extra"], values=self.extras["similarity.values"], axes=tuple(m["axes"]),
            metric=m["metric"], provenance=self.provenance, labels={k: tuple(v) for k, v in m["labels"].items()},
            extras={k: self.extras[f"similarity.{k}"] for k in m["extras"]})

    @property
    def jaccard(self) -> PermutationTest:
        e = self.extras
        return PermutationTest(e["jaccard.statistic"], e["jaccard.p_value"], e["jaccard.null"], **self.meta["jaccard"])

    def scores(self) -> dict[str, dict[str, float]]:
        """Every measure's score, null mean, null 95th percentile and p-value (Jaccard included)."""
        columns = [self.values, *(self.extras[k] for k in _SCORES[1:])]
        return {m: {k: float(c[i]) for k, c in zip(_SCORES, columns)} for i, m in enumerate(self.labels["measure"])}

    def _headline(self) -> str:
        body = ", ".join(f"{m} {float(self.values[i]):.3f} (p={float(self.extras['p_value'][i]):.3g})"
                         for i, m in enumerate(self.labels["measure"]))
        return f"{self.extras['pairs'].shape[0]} pairs; {body}"

    def __repr__(self) -> str:
        """One line: the pairs, each measure's score and p-value, the model and seed (shorter than
        ``Result``'s line: the measure axis is the headline itself)."""
        try:
            head = self._headline()
        except (KeyError, IndexError, ValueError):  # a bare result (no extras): the generic line
            head = Result._headline(self)
        seed = "" if self.provenance.seed is None else f", seed={self.provenance.seed}"
        return bounded(f"FeatureSpaces({head}; model={short(self.provenance.model_id, 60)}{seed})")

    def summary(self) -> str:
        """The pairing in one line, then one line per metric: score, random-pairing null, p."""
        s = self.settings
        lines = [f"{self.pairs.shape[0]} feature pairs ({s['method']}, activation r >= {s['min_correlation']}; "
                 f"median r {float(self.correlations.median()):.3f}) of {s['live_a']} live features in A and "
                 f"{s['live_b']} in B, paired on {s['n_pairing_inputs']} inputs; Jaccard on "
                 + ("the same inputs (circular: the pairing was chosen to agree there)" if s["jaccard_circular"]
                    else f"{s['n_jaccard_inputs']} held-out inputs")]
        for name, v in self.scores().items():
            lines.append(f"{name:>11}: {v['score']:.3f}  random pairings {v['null_mean']:.3f} "
                         f"(95% {v['null_q95']:.3f})  p={v['p_value']:.4f}")
        return "\n".join(lines)

    # -- persistence ------------------------------------------------------------------------
    def _extra_meta(self) -> dict[str, Any]:
        return self.meta

    @classmethod
    def _rebuild(cls, extra_meta: dict[str, Any], **fields: Any) -> "FeatureSpaces":
        return cls(meta=extra_meta, **fields)


_SCORES = ("score", "null_mean", "null_q95", "p_value")


def _codes(codes: ArrayLike, decoder: ArrayLike, side: str) -> tuple[Tensor, Tensor]:
    c = as_float64(codes, f"feature_spaces: codes_{side}", min_ndim=2)
    d = as_float64(decoder, f"feature_spaces: decoder_{side}", min_ndim=2)
    if c.ndim != 2 or d.ndim != 2 or c.shape[1] != d.shape[0]:
        raise ShapeError(f"feature_spaces: codes_{side} must be (n inputs, d_sae) and decoder_{side} (d_sae, d_model) "
                         f"with the same d_sae, got {tuple(c.shape)} and {tuple(d.shape)} (sae-lens: sae.W_dec)")
    return c, d


def _options(options: Mapping[str, Mapping[str, Any]] | None, metrics: Sequence[str], k: int,
             widths: tuple[int, int]) -> dict[str, dict[str, Any]]:
    """Defaults for decoder directions: cosine RDMs (rotation-invariant), SVCCA on a fixed number of directions."""
    out = {name: dict(v) for name, v in (options or {}).items()}
    if "rsa" in metrics:
        out.setdefault("rsa", {}).setdefault("rdm", "cosine")
    if "svcca" in metrics and not out.get("svcca"):
        out["svcca"] = {"dims": max(1, min(_SVCCA_DIMS, *widths, (k - 1) // 2))}
    return out


@renamed(metrics="measures")
@checked
def feature_spaces(codes_a: ArrayLike, codes_b: ArrayLike, decoder_a: ArrayLike, decoder_b: ArrayLike, *,
                   method: str = "hungarian", min_correlation: float = 0.0, heldout: float = 0.5,
                   measures: Sequence[str] = DEFAULT_METRICS, options: Mapping[str, Mapping[str, Any]] | None = None,
                   n_permutations: int = 1000, n_boot: int = 200, alpha: float = 0.05, seed: int = 0,
                   model_id: str = "feature spaces", progress: bool = False) -> FeatureSpaces:
    """Pair two SAEs' features by activation correlation, then compare their decoder directions.

    Args:
        codes_a, codes_b: feature activations ``(n, d_sae_a)`` and ``(n, d_sae_b)`` on the same n
            inputs (rows paired: e.g. the same text position read in two models).
        decoder_a, decoder_b: decoder matrices ``(d_sae, d_model)``, one row per feature
            (sae-lens's ``sae.W_dec``).
        method: pairing, ``"hungarian"`` (one-to-one) or ``"argmax"`` (each A feature's best B feature).
        min_correlation: keep only pairs whose activation correlation is at least this.
        heldout: share of the inputs (the last rows) kept out of the pairing, on which the
            Jaccard score is read; 0 reads it on the pairing's own inputs (circular: flagged).
        measures: similarity measures of the decoders, from ``compare``'s ``METRICS`` (default SVCCA, RSA, Procrustes).
        options: per-metric options; defaults here: ``rsa`` with cosine RDMs (decoder directions
            have no meaningful mean across d_model), ``svcca`` keeping min(20, d_a, d_b, (k-1)//2)
            directions per side.
        n_permutations: random pairings for every null (the same ones for every metric and Jaccard).
        n_boot: bootstrap resamples of pairs for the metrics' intervals.
        alpha: 1 - coverage of those intervals.
        seed: seed of the random pairings and resamples.
        model_id: what is compared, for provenance (``"smollm2 L15 SAE vs gemma L9 SAE"``).
        progress: show progress bars.

    Returns:
        ``FeatureSpaces``: ``.pairs``, ``.similarity`` (decoder metrics), ``.jaccard``, ``.summary()``.

    Raises:
        InputError: fewer than 4 pairs remain (after dropping dead features and ``min_correlation``).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> codes = torch.relu(torch.randn(300, 40, generator=g))
        >>> dec = torch.randn(40, 16, generator=g)
        >>> perm = torch.randperm(40, generator=g)
        >>> Q = torch.linalg.qr(torch.randn(16, 16, generator=g))[0]
        >>> noise = 0.05 * torch.randn(40, 16, generator=g)
        >>> import warnings
        >>> with warnings.catch_warnings():  # compare: at 40 pairs, Procrustes's bootstrap interval is biased
        ...     warnings.simplefilter("ignore")
        ...     res = feature_spaces(codes, codes[:, perm], dec, (dec[perm] + noise) @ Q, n_permutations=99, n_boot=20)
        >>> bool((res.pairs[:, 0] == perm[res.pairs[:, 1]]).all()), round(res.scores()["procrustes"]["score"], 2)
        (True, 1.0)
        >>> res.scores()["svcca"]["p_value"]  # no random pairing of the same directions comes close
        0.01
    """
    check_count(n_permutations, "n_permutations")
    if not -1.0 <= min_correlation < 1.0:
        raise OptionError(f"feature_spaces: min_correlation={min_correlation} must be a correlation in [-1, 1)")
    if not 0.0 <= heldout < 1.0:
        raise OptionError(f"feature_spaces: heldout={heldout} must be a share of the inputs in [0, 1)")
    unknown = [m for m in measures if m not in METRICS]
    if unknown or not measures:
        raise OptionError(f"feature_spaces: measures {list(measures)}: unknown {unknown}; choose from {tuple(METRICS)} "
                          "(Jaccard of co-firing is always computed)")
    ca, da = _codes(codes_a, decoder_a, "a")
    cb, db = _codes(codes_b, decoder_b, "b")
    if ca.shape[0] != cb.shape[0]:
        raise ShapeError(f"feature_spaces: codes_a has {ca.shape[0]} inputs and codes_b {cb.shape[0]}; rows must be "
                         "the same inputs (e.g. the same text position) in both")
    n_fit = ca.shape[0] - round(heldout * ca.shape[0])
    if n_fit < 3 or (heldout and n_fit == ca.shape[0]):
        raise InputError(f"feature_spaces: {ca.shape[0]} inputs with heldout={heldout} leave {n_fit} to pair on and "
                         f"{ca.shape[0] - n_fit} for Jaccard; use more inputs")
    test = slice(n_fit, None) if heldout else slice(None)
    match = match_units(ca[:n_fit], cb[:n_fit], method=method)
    keep = match.correlations >= min_correlation
    pairs, corr = match.pairs[keep], match.correlations[keep]
    if pairs.shape[0] < 4:
        raise InputError(f"feature_spaces: {pairs.shape[0]} feature pairs have activation correlation >= "
                         f"{min_correlation} (of {match.pairs.shape[0]} pairs; {match.constant_a.numel()} features of A "
                         f"and {match.constant_b.numel()} of B never vary on the {n_fit} pairing inputs); lower "
                         "min_correlation or use more (or more varied) inputs")
    k = pairs.shape[0]
    opts = _options(options, measures, k, (da.shape[1], db.shape[1]))
    similarity = compare(da[pairs[:, 0]], db[pairs[:, 1]], measures=measures, options=opts,
                         n_permutations=n_permutations, n_boot=n_boot, alpha=alpha, seed=seed,
                         model_id=model_id, progress=progress)
    perms = permutation_indices(k, n_permutations, seed=seed)  # compare's random pairings, exactly
    jaccard = permutation_test(paired_jaccard, ca[test][:, pairs[:, 0]].T, cb[test][:, pairs[:, 1]].T,
                               permutations=perms, progress=progress)
    settings = {"method": method, "min_correlation": min_correlation, "n_inputs": ca.shape[0],
                "n_pairing_inputs": n_fit, "n_jaccard_inputs": ca.shape[0] - n_fit if heldout else ca.shape[0],
                "jaccard_circular": not heldout,
                "d_sae": [ca.shape[1], cb.shape[1]], "d_model": [da.shape[1], db.shape[1]],
                "live_a": ca.shape[1] - match.constant_a.numel(), "live_b": cb.shape[1] - match.constant_b.numel(),
                "pairs": k, "options": opts, "n_permutations": n_permutations, "n_boot": n_boot, "seed": seed}
    return FeatureSpaces.of(match, pairs, corr, similarity, jaccard, settings)
