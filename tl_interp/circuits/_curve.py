"""Faithfulness curves at MIB's edge budgets: f per budget, CPR, CMD, with bootstrap intervals.

MIB's circuit-localisation track (Mueller et al. 2025; ``evaluate_area_under_curve`` in its
code) builds, for each budget b in {0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100}% of the graph's
``N`` edges, the circuit of the top ``int(b * N)`` edges (pruned), evaluates it exactly, and
normalises the mean metric:

    f(b) = (mean circuit(b) - mean corrupted) / (mean clean - mean corrupted)

(a ratio of means over prompts, not a mean of per-prompt ratios). CPR is the area under f and
CMD the area under |1 - f|, each by the trapezoid rule between consecutive budgets on the
*linear* budget-fraction axis (0.001 ... 1; nothing is added before the first budget). CPR:
higher is better; CMD: lower is better. Every circuit of every method and budget is evaluated
in one ``faithfulness`` call (many circuits per stacked pass); intervals come from resampling
prompts (one set of resamples for every method, so intervals of methods are paired).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from tl_interp._checks import checked, reordered
from tl_interp.circuits._circuit import Circuit
from tl_interp.circuits._faithfulness import faithfulness
from tl_interp.circuits._stability import check_gap, dense, resampled_scores, top_k_survival
from tl_interp.circuits._scores import EdgeScores
from tl_interp.engine.executors import Executor
from tl_interp.engine.inputs import Inputs
from tl_interp.errors import InputError, OptionError, ShapeError
from tl_interp.results import Provenance, Result, register_result, short
from tl_interp.stats import bootstrap_indices, percentile_interval

__all__ = ["MIB_BUDGETS", "FaithfulnessCurve", "faithfulness_curve", "area_under", "curve_statistics"]

MIB_BUDGETS: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def area_under(budgets: Sequence[float], f: Tensor) -> Tensor:
    """MIB's trapezoid area of ``f`` (budgets on the last axis) over the linear budget axis.

    Example:
        >>> import torch
        >>> float(area_under([0.0, 0.5, 1.0], torch.tensor([0.0, 1.0, 1.0])))
        0.75
    """
    x = torch.as_tensor(budgets, dtype=torch.float64)
    f = f.double()
    return ((x[1:] - x[:-1]) * (f[..., 1:] + f[..., :-1]) / 2).sum(-1)


def _normalised(circuit: Tensor, clean: Tensor, corrupted: Tensor) -> Tensor:
    """(mean circuit - mean corrupted) / (mean clean - mean corrupted) over the last axis."""
    k = corrupted.mean(-1)
    return (circuit.mean(-1) - k[..., None, None]) / (clean.mean(-1) - k)[..., None, None]


def curve_statistics(circuit: Tensor, clean: Tensor, corrupted: Tensor, budgets: Sequence[float], *,
                     n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> dict[str, Tensor]:
    """f, CPR and CMD with paired bootstrap intervals over prompts.

    Args:
        circuit: ``(method, budget, prompt)`` metric of each circuit on each prompt.
        clean, corrupted: ``(prompt,)`` metric of the clean and the corrupted run.
        budgets: the budget fractions (the curve's x axis).
        n_boot, alpha, seed: the bootstrap (``stats.bootstrap_indices``).

    Returns:
        ``f``, ``f_low``, ``f_high`` ``(method, budget)``; ``cpr``, ``cmd`` and their
        ``_low`` / ``_high`` ``(method,)``; float64.
    """
    circuit, clean, corrupted = circuit.double().cpu(), clean.double().cpu(), corrupted.double().cpu()
    if circuit.ndim != 3 or circuit.shape[1] != len(budgets) or circuit.shape[2] != clean.shape[0]:
        raise ShapeError(f"circuit values must be (method, budget={len(budgets)}, prompt={clean.shape[0]}), "
                         f"got {tuple(circuit.shape)}")
    check_gap(clean, corrupted)
    f = _normalised(circuit, clean, corrupted)
    out = {"f": f, "cpr": area_under(budgets, f), "cmd": area_under(budgets, (1 - f).abs())}
    index = bootstrap_indices(clean.shape[0], n_boot, seed=seed)
    fs = torch.cat([_normalised(circuit[:, :, block].movedim(2, 0), clean[block], corrupted[block])
                    for block in index.split(256)])  # (boot, method, budget)
    for name, boot in (("f", fs), ("cpr", area_under(budgets, fs)), ("cmd", area_under(budgets, (1 - fs).abs()))):
        out[f"{name}_low"], out[f"{name}_high"] = percentile_interval(boot, alpha, dim=0)
    return out


@register_result
@dataclass(frozen=True, eq=False, repr=False)
class FaithfulnessCurve(Result):
    """Normalised faithfulness f per (method, budget), MIB's CPR and CMD per method.

    ``values``: f, axes ``("method", "budget")``. Extras: ``f_low`` / ``f_high``;
    ``cpr``, ``cmd`` and their ``_low`` / ``_high`` (per method); ``budgets`` (fractions);
    ``n_edges`` (edges in each circuit after pruning) and ``n_requested`` (``int(b * N)``);
    ``circuit`` (method, budget, prompt), ``clean`` and ``corrupted`` (per prompt): the
    metric values everything is computed from; ``survival`` (method, budget): the mean
    fraction of each budget's top edges that stay in the top when prompts are resampled.
    """

    kind: ClassVar[str] = "faithfulness_curve"

    @property
    def methods(self) -> tuple[str, ...]:
        return self.labels["method"]

    @property
    def budgets(self) -> list[float]:
        return self.extras["budgets"].tolist()

    @property
    def cpr(self) -> Tensor:
        """Area under f per method (higher is better)."""
        return self.extras["cpr"]

    @property
    def cmd(self) -> Tensor:
        """Area under |1 - f| per method (lower is better)."""
        return self.extras["cmd"]

    def table(self) -> Any:
        """One row per method: CPR and CMD with their intervals, and f at every budget."""
        import pandas as pd

        e = self.extras
        rows = []
        for i, method in enumerate(self.methods):
            row = {"method": method, "CPR": float(e["cpr"][i]), "CPR 95% CI": f"[{float(e['cpr_low'][i]):.3g}, "
                   f"{float(e['cpr_high'][i]):.3g}]", "CMD": float(e["cmd"][i]),
                   "CMD 95% CI": f"[{float(e['cmd_low'][i]):.3g}, {float(e['cmd_high'][i]):.3g}]"}
            row.update({f"f@{b}": float(self.values[i, j]) for j, b in enumerate(self.labels["budget"])})
            rows.append(row)
        return pd.DataFrame(rows)

    def _headline(self) -> str:
        return ", ".join(f"{short(m)} CPR {float(self.cpr[i]):.3g} CMD {float(self.cmd[i]):.3g}"
                         for i, m in enumerate(self.methods[:6])) + f" over {len(self.budgets)} budgets"

    def _summary_lines(self) -> list[str]:
        e = self.extras
        lines = ["per method: CPR (area under f, higher better) and CMD (area under |1 - f|, lower better), 95% CI"]
        lines += [f"{short(m):>24}: CPR {float(e['cpr'][i]):.3f} [{float(e['cpr_low'][i]):.3f}, "
                  f"{float(e['cpr_high'][i]):.3f}]  CMD {float(e['cmd'][i]):.3f} [{float(e['cmd_low'][i]):.3f}, "
                  f"{float(e['cmd_high'][i]):.3f}]" for i, m in enumerate(self.methods)]
        if "survival" in e:  # a circuit without an interval is a claim without an error bar
            lines.append("top-edge survival (fraction of each budget's top edges still in the top on resampled "
                         "prompts) at " + ", ".join(self.labels["budget"]))
            lines += [f"{short(m):>24}: " + " ".join(f"{float(v):.2f}" for v in e["survival"][i].tolist())
                      for i, m in enumerate(self.methods)]
        return lines

    def figure(self, **kwargs: Any) -> Any:
        """f against the budget per method, with interval bands (``ti.viz.circuit.curve_figure``)."""
        from tl_interp.viz.circuit import curve_figure

        return curve_figure(self, **kwargs)

    def _repr_html_(self) -> str:
        import tl_interp.viz  # noqa: F401  (registers this kind's summary)
        from tl_interp.viz.html import result_html

        return result_html(self)

    @classmethod
    def _rebuild(cls, extra_meta: dict[str, Any], **fields: Any) -> "FaithfulnessCurve":
        return cls(**fields)


def _budget_label(b: float) -> str:
    return f"{b * 100:g}%"


def _scores_first(args: tuple[Any, ...]) -> bool:
    """``faithfulness_curve(scores, model, ...)``: the edge scores came first."""
    first = args[0] if args else None
    return isinstance(first, EdgeScores) or (isinstance(first, Sequence) and len(first) > 0
                                             and all(isinstance(s, EdgeScores) for s in first))


@reordered(("scores", "model", "clean", "corrupted"), _scores_first)
@checked
def faithfulness_curve(model: Any, clean: Inputs, corrupted: Inputs, scores: EdgeScores | Sequence[EdgeScores],
                       metric: Callable[..., Any], *,
                       budgets: Sequence[float] = MIB_BUDGETS, selection: Literal["top", "greedy"] = "top",
                       absolute: bool = True, ablation: Literal["corrupted", "mean", "zero"] = "corrupted",
                       n_boot: int = 1000, alpha: float = 0.05, seed: int = 0, progress: bool = True,
                       executor: Executor | None = None) -> FaithfulnessCurve:
    """MIB's faithfulness curve of one or several edge scorings, evaluated exactly in one batched call.

    Args:
        model: the model the scores were computed on.
        clean, corrupted: the prompts (``inputs`` forms) faithfulness is measured on.
        scores: an ``EdgeScores`` or a sequence of them (one per method, same graph); the old
            order ``(scores, model, clean, ...)`` warns.
        metric: a ``ti.metrics`` metric with per-prompt values (intervals need them).
        budgets: fractions of the graph's edges, increasing (MIB's by default).
        selection: ``"top"`` (MIB's default, ``Circuit.top``) or ``"greedy"``.
        absolute: rank edges by |score| (MIB's CMD setting) or by signed score (its CPR setting).
        ablation: what an edge outside the circuit carries (as ``faithfulness``).
        n_boot, alpha, seed: the bootstrap over prompts.
        progress: show progress bars.
        executor: where the forward passes run (``None``: here).

    Returns:
        ``FaithfulnessCurve``.

    Example:
        >>> import torch, tl_interp as ti
        >>> from transformer_lens import HookedTransformer, HookedTransformerConfig
        >>> cfg = HookedTransformerConfig(n_layers=2, d_model=16, n_heads=2, d_head=8, n_ctx=8,
        ...                               d_vocab=10, act_fn="relu", d_mlp=32, seed=0)
        >>> model = HookedTransformer(cfg)
        >>> clean, corrupt = torch.tensor([[1, 2, 3, 4], [2, 3, 4, 1]]), torch.tensor([[1, 2, 5, 4], [2, 3, 6, 1]])
        >>> metric = ti.metrics.logit_diff(torch.tensor([3, 4]), torch.tensor([5, 6]))
        >>> scores = ti.circuits.attribute(model, clean, corrupt, metric, method="eap", progress=False)
        >>> curve = ti.circuits.faithfulness_curve(model, clean, corrupt, scores, metric, n_boot=20, progress=False)
        >>> curve.values.shape, round(float(curve.values[0, -1]), 4)  # at 100% of the edges: the whole model
        (torch.Size([1, 10]), 1.0)
    """
    from tl_interp.patching._sweep import metric_name

    runs = [scores] if isinstance(scores, EdgeScores) else list(scores)
    if not runs:
        raise InputError("faithfulness_curve needs at least one EdgeScores")
    graph = runs[0].graph
    if any(tuple(r.graph.edges) != tuple(graph.edges) for r in runs):
        raise InputError("every EdgeScores must be of the same graph (the same model); got graphs with different edges")
    budgets = [float(b) for b in budgets]
    if not budgets or any(not 0 <= b <= 1 for b in budgets) or any(a >= b for a, b in zip(budgets, budgets[1:])):
        raise OptionError(f"budgets must be increasing fractions of the edges in [0, 1] (MIB's: {MIB_BUDGETS}), "
                          f"got {budgets}")
    methods = [r.method or f"scores {i}" for i, r in enumerate(runs)]
    if len(set(methods)) != len(methods):
        methods = [f"{m} ({i})" for i, m in enumerate(methods)]
    n_all = len(graph.edges)
    requested = [int(b * n_all) for b in budgets]  # MIB's int(pct * N)
    build = Circuit.top if selection == "top" else Circuit.greedy
    circuits = [[build(r, n, absolute=absolute) for n in requested] for r in runs]
    # identical edge sets (the full circuit at 100%, methods that agree) are evaluated once
    unique: dict[tuple[str, ...], int] = {}
    for row in circuits:
        for c in row:
            unique.setdefault(c.edges, len(unique))
    result = faithfulness(model, clean, corrupted, [Circuit(e, graph) for e in unique], metric, ablation=ablation,
                          per_position=graph.n_pos is not None,
                          progress=progress, executor=executor)
    per_circuit, clean_values, corrupted_values = _per_prompt(result)
    index = torch.tensor([[unique[c.edges] for c in row] for row in circuits])
    values = per_circuit[index]  # (method, budget, prompt)
    stats = curve_statistics(values, clean_values, corrupted_values, budgets, n_boot=n_boot, alpha=alpha, seed=seed)
    survival = torch.stack([top_k_survival(_mean_scores(r), resampled_scores(r.per_prompt, n_boot=min(n_boot, 200),
                                                                             seed=seed), requested, absolute=absolute).mean(1)
                            for r in runs])
    prov = Provenance.make(result.provenance.model_id, prompt_hash=result.provenance.prompt_hash, seed=seed,
                           settings={"selection": selection, "absolute": absolute, "ablation": ablation,
                                     "n_boot": n_boot, "alpha": alpha, "n_graph_edges": n_all,
                                     "circuits_evaluated": len(unique),
                                     "executor": result.provenance.settings.get("executor", "local"),
                                     "engine": result.provenance.settings.get("engine", {})})
    extras = {k: v for k, v in stats.items() if k != "f"}
    extras.update({"budgets": torch.tensor(budgets, dtype=torch.float64),
                   "n_edges": torch.tensor([[len(c) for c in row] for row in circuits]),
                   "n_requested": torch.tensor(requested), "circuit": values, "clean": clean_values,
                   "corrupted": corrupted_values, "survival": survival})
    return FaithfulnessCurve(stats["f"], ("method", "budget"), metric_name(metric), prov,
                             labels={"method": tuple(methods), "budget": tuple(_budget_label(b) for b in budgets)},
                             extras=dense(extras))


def _mean_scores(scores: Any) -> Tensor:
    return scores.per_prompt.detach().double().cpu().mean(0)


def _per_prompt(result: Any) -> tuple[Tensor, Tensor, Tensor]:
    """(circuit, prompt), (prompt,), (prompt,) metric values from a ``Faithfulness`` result."""
    values = result.values.detach().double().cpu()
    clean, corrupted = result.extras["clean"].double().cpu(), result.extras["corrupted"].double().cpu()
    if values.ndim != 2 or clean.ndim != 1:
        raise ShapeError("faithfulness_curve needs per-prompt values (a ti.metrics metric); got circuit values of "
                         f"shape {tuple(values.shape)} and clean values of shape {tuple(clean.shape)}")
    return values, clean, corrupted
