"""How stable edge scores and the circuits built from them are when the prompts are resampled.

Every edge score the toolkit computes (EAP, EAP-IG, exact) is a mean over prompts of a
per-prompt score, so resampling prompts with replacement (a paired bootstrap, Efron &
Tibshirani 1993) needs no new forward pass: each resample's scores are a reweighted mean of
``EdgeScores.per_prompt``. From the resamples: a percentile interval per edge, and how many
of the top-k edges stay in the top-k (Jaccard-free "survival": |top_k(resample) ∩ top_k| / k),
the number that says whether a circuit is a finding or an accident of the prompt sample.
``circuit_intervals`` does the same for circuits: each circuit's normalised faithfulness (MIB's
ratio of means) with a percentile interval over the prompts, resampled with the clean and
corrupted runs' values of the same prompts.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from tl_interp._checks import check_count, checked
from tl_interp.errors import InputError, SelectionError, ShapeError, UnsupportedError
from tl_interp.results import Provenance, Result, register_result, short
from tl_interp.stats import bootstrap_ci, bootstrap_indices, percentile_interval

__all__ = ["EdgeStability", "stability", "circuit_intervals", "resampled_scores", "top_k_survival"]


def resampled_scores(per_prompt: Tensor, *, n_boot: int, seed: int) -> Tensor:
    """``(n_boot, n_edges)`` mean scores over prompts resampled with replacement
    (``stats.bootstrap_indices(n_prompts, n_boot, seed=seed)``), float32 to bound memory."""
    n = per_prompt.shape[0]
    if n < 2:
        raise InputError(f"resampling prompts needs at least 2 prompts' scores, got {n}")
    index = bootstrap_indices(n, n_boot, seed=seed)
    # each resample's mean is a count-weighted mean of the per-prompt rows: one matmul
    counts = torch.zeros(n_boot, n, dtype=torch.float64).scatter_add_(1, index, torch.ones(n_boot, n, dtype=torch.float64))
    return (counts.float() @ per_prompt.detach().float().cpu()) / n


def _top_mask(values: Tensor, k: int) -> Tensor:
    """Boolean mask of the k largest entries along the last axis (ties broken by position)."""
    mask = torch.zeros_like(values, dtype=torch.bool)
    if k > 0:
        mask.scatter_(-1, torch.topk(values, k, dim=-1, sorted=False).indices, True)
    return mask


def top_k_survival(scores: Tensor, resampled: Tensor, ks: Sequence[int], *, absolute: bool = True) -> Tensor:
    """``(len(ks), n_boot)``: the fraction of the top-k edges of ``scores`` that are also in
    the top-k of each resample (1 where k is 0)."""
    key, rkey = (scores.abs(), resampled.abs()) if absolute else (scores, resampled)
    out = torch.ones(len(ks), resampled.shape[0], dtype=torch.float64)
    for i, k in enumerate(ks):
        if k > 0:
            base = _top_mask(key.float()[None], k)
            out[i] = (_top_mask(rkey, k) & base).sum(-1).double() / k
    return out


@register_result
@dataclass(frozen=True, eq=False, repr=False)
class EdgeStability(Result):
    """Edge scores with bootstrap intervals over prompts, and top-k survival.

    ``values`` (axis ``edge``): each edge's score (the mean over prompts). Extras:
    ``ci_low`` / ``ci_high`` (per edge), ``in_top_k`` (per edge: the fraction of resamples
    whose top-k holds it), ``survival`` (per k in ``ks``: the mean fraction of the top-k that
    stays in a resample's top-k) with ``survival_low`` / ``survival_high``, and ``ks``.
    """

    kind: ClassVar[str] = "edge_stability"

    @property
    def survival(self) -> Tensor:
        return self.extras["survival"]

    @property
    def ks(self) -> list[int]:
        return [int(k) for k in self.extras["ks"].tolist()]

    def unstable(self, k: int | None = None, *, threshold: float = 0.5) -> list[tuple[str, float]]:
        """Edges of the top-k (the first ``ks`` by default; at most every edge) found in fewer than
        ``threshold`` of the resamples' top-k, as (edge, frequency)."""
        k = self.ks[0] if k is None else check_count(k, "k", high=self.values.numel(), what="EdgeStability.unstable",
                                                      items="edges")
        order = self.values.abs().argsort(descending=True)[:k].tolist()
        freq = self.extras["in_top_k"]
        return [(self.label("edge", i), float(freq[i])) for i in order if float(freq[i]) < threshold]

    def _headline(self) -> str:
        survival = ", ".join(f"top-{k} {float(s):.2f}" for k, s in zip(self.ks[:4], self.survival.tolist()))
        return f"survival: {survival}; {len(self.unstable())} of the top {self.ks[0]} edges unstable (<50%)"

    def _summary_lines(self) -> list[str]:
        e = self.extras
        lines = ["top-k survival: mean fraction of the top k still in the top k when prompts are resampled (95% CI)"]
        lines += [f"{'top-' + str(k):>24}: {float(s):.3f} [{float(lo):.3f}, {float(hi):.3f}]" for k, s, lo, hi in
                  zip(self.ks, self.survival.tolist(), e["survival_low"].tolist(), e["survival_high"].tolist())]
        unstable = self.unstable()
        lines.append(f"unstable edges of the top {self.ks[0]} (in fewer than half the resamples' top): "
                     + (", ".join(f"{short(n, 32)} {f:.2f}" for n, f in unstable[:10]) or "none"))
        return lines

    def _repr_html_(self) -> str:
        import tl_interp.viz  # noqa: F401  (registers this kind's summary)
        from tl_interp.viz.html import result_html

        return result_html(self)

    @classmethod
    def _rebuild(cls, extra_meta: dict[str, Any], **fields: Any) -> "EdgeStability":
        return cls(**fields)


@checked
def stability(scores: Any, *, k: int | Sequence[int] = 20, n_boot: int = 200, alpha: float = 0.05, seed: int = 0,
              absolute: bool = True) -> EdgeStability:
    """Edge intervals and top-k survival from prompts resampled with replacement.

    Args:
        scores: an ``EdgeScores`` with per-prompt values (``ti.circuits.attribute``).
        k: the circuit size(s) whose survival is reported; per-edge frequencies use the first.
        n_boot: number of resamples (each is one matmul over the per-prompt scores).
        alpha: 1 - coverage of the intervals.
        seed: seed of the resampling (``stats.bootstrap_indices``).
        absolute: rank edges by |score| (as ``Circuit.top``) or by the signed score.

    Returns:
        ``EdgeStability``.

    Example:
        >>> import torch
        >>> from types import SimpleNamespace
        >>> per_prompt = torch.tensor([[3.0, 1.0, 0.1], [2.5, 1.2, 0.0], [3.2, 0.9, 0.2]])
        >>> s = SimpleNamespace(names=("a", "b", "c"), per_prompt=per_prompt, scores=per_prompt.mean(0), method="eap")
        >>> float(stability(s, k=1, n_boot=50).survival[0])
        1.0
    """
    ks = [k] if isinstance(k, int) else list(k)
    per_prompt = scores.per_prompt
    names = tuple(scores.names)
    if per_prompt.ndim != 2 or per_prompt.shape[1] != len(names):
        raise ShapeError(f"per-prompt scores must be (n_prompts, n_edges={len(names)}), got {tuple(per_prompt.shape)}")
    if not ks:
        raise SelectionError("stability: k is empty; give at least one top-k size")
    for x in ks:
        check_count(x, "k", low=0, high=len(names), what="stability")
    mean = per_prompt.detach().double().cpu().mean(0)
    resampled = resampled_scores(per_prompt, n_boot=n_boot, seed=seed)
    low, high = percentile_interval(resampled, alpha, dim=0)
    survival = top_k_survival(mean, resampled, ks, absolute=absolute)
    s_low, s_high = percentile_interval(survival, alpha, dim=1)
    rkey = resampled.abs() if absolute else resampled
    in_top = _top_mask(rkey, ks[0]).double().mean(0)
    provenance = getattr(scores, "provenance", None)
    prov = Provenance.make(provenance.model_id if provenance else "", prompt_hash=getattr(provenance, "prompt_hash", ""),
                           seed=seed, settings={"n_boot": n_boot, "alpha": alpha, "absolute": absolute,
                                                "method": getattr(scores, "method", "")})
    return EdgeStability(mean, ("edge",), f"{getattr(scores, 'method', '')} edge score".strip(), prov,
                         labels={"edge": names},
                         extras=dense({"ci_low": low, "ci_high": high, "in_top_k": in_top, "survival": survival.mean(1),
                                 "survival_low": s_low, "survival_high": s_high,
                                 "ks": torch.tensor(ks, dtype=torch.int64)}))


@checked
def circuit_intervals(result: Any, *, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> dict[str, Tensor]:
    """Each circuit's normalised faithfulness ``f = (mean circuit - mean corrupted) / (mean clean -
    mean corrupted)`` (MIB's ratio of means over prompts) with a percentile interval over prompts
    resampled with replacement (``stats.bootstrap_ci``: the circuit's, the clean and the corrupted
    values of a prompt stay together; every circuit sees the same resamples).

    Args:
        result: a ``Faithfulness`` result (``ti.circuits.faithfulness``).
        n_boot: number of resamples.
        alpha: 1 - coverage of the intervals.
        seed: seed of the resampling (``stats.bootstrap_indices``).

    Returns:
        ``{"f", "f_low", "f_high"}``: float64 ``(n_circuits,)`` tensors.

    Raises:
        UnsupportedError: the clean and corrupted runs have the same mean metric (f is undefined).

    Example:
        >>> import torch
        >>> from types import SimpleNamespace
        >>> r = SimpleNamespace(values=torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, 0.5]]),
        ...                     extras={"clean": torch.tensor([2.0, 2.0, 2.0]), "corrupted": torch.tensor([0.0, 0.0, 0.0])})
        >>> [round(float(v), 3) for v in circuit_intervals(r, n_boot=50)["f"]]
        [1.0, 0.25]
    """
    extras = getattr(result, "extras", None)
    if not isinstance(getattr(result, "values", None), Tensor) or not isinstance(extras, dict) \
            or "clean" not in extras or "corrupted" not in extras:
        raise InputError(f"circuit_intervals needs a Faithfulness result (ti.circuits.faithfulness), not "
                         f"{type(result).__name__}")
    values = result.values.detach().double().cpu()
    clean = result.extras["clean"].detach().double().cpu()
    corrupted = result.extras["corrupted"].detach().double().cpu()
    if values.ndim != 2 or clean.shape != (values.shape[1],) or corrupted.shape != clean.shape:
        raise ShapeError(f"circuit_intervals needs per-prompt values (a ti.metrics metric): circuit values "
                         f"(circuit, prompt), clean and corrupted (prompt,); got {tuple(values.shape)}, "
                         f"{tuple(clean.shape)}, {tuple(corrupted.shape)}")
    check_gap(clean, corrupted)

    def ratio(circuit: Tensor, c: Tensor, k: Tensor) -> Tensor:  # (b, prompt, circuit), (b, prompt) x2 -> (b, circuit)
        return (circuit.mean(1) - k.mean(1)[:, None]) / (c.mean(1) - k.mean(1))[:, None]

    f = ratio(values.T[None], clean[None], corrupted[None])[0]
    low, high = bootstrap_ci(ratio, values.T, clean, corrupted, n_boot=n_boot, alpha=alpha, seed=seed, vectorized=True)
    return {"f": f, "f_low": low, "f_high": high}


def check_gap(clean: Tensor, corrupted: Tensor) -> None:
    """Refuse per-prompt clean / corrupted metrics whose means agree: f's denominator is zero."""
    gap = float(clean.mean() - corrupted.mean())
    if abs(gap) <= 1e-5 * (1 + float(clean.mean().abs())):
        raise UnsupportedError(f"the clean and corrupted runs give the same mean metric ({float(clean.mean()):.6g} vs "
                               f"{float(corrupted.mean()):.6g}), so faithfulness (circuit - corrupted) / (clean - "
                               "corrupted) is undefined; use prompts whose corruption changes the metric")


def dense(extras: dict[str, Tensor]) -> dict[str, Tensor]:
    """Extras in standard strides: quantiles of a length-1 axis come back with stride 2, which
    the checksummed writer cannot view as bytes."""
    return {k: v.detach().clone(memory_format=torch.contiguous_format) for k, v in extras.items()}
