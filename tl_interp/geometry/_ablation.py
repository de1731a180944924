"""Subspace ablation: the metric when a subspace is projected out of a site, against random subspaces.

For each named subspace (rows spanning it), ``hooks.project_out(where, basis)`` removes the
activations' component in its span (directional ablation) and the model's output is scored
by ``metric``. A subspace's effect is read against ``n_random`` random subspaces of the same
dimension at the same site (Gaussian bases, seeded): ablating *any* k of d directions costs
something, and only a cost well above the random ones says the subspace carries the
computation.

On a transformer every ablation (and the unablated run) is a cell of one engine plan
(``engine.executors.Plan``): the engine runs the batch once and the cells many per pass,
from the ablated layer on, within ``memory_mb``, on any executor. A custom
``HookedRootModule`` (a toy network without a transformer's config, such as ``s5-mlp``) has
no layers to start from: its cells run one forward pass each, here.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from tl_interp._checks import checked
from tl_interp import hooks
from tl_interp._types import MetricFn, NameFilter
from tl_interp.errors import InputError, OptionError, UnsupportedError
from tl_interp.engine.executors import Executor, Plan, execute
from tl_interp.engine.inputs import as_batch
from tl_interp.engine.run import EngineOptions, check_metric
from tl_interp.intervention import Intervention
from tl_interp.metrics import is_metric
from tl_interp.models._adapter import adapt
from tl_interp.results import Provenance, Result, prompt_hash, register_result, short
from tl_interp.sites import resolve

__all__ = ["SubspaceAblation", "subspace_ablation"]


@register_result
@dataclass(frozen=True, eq=False, repr=False)
class SubspaceAblation(Result):
    """The metric with each subspace ablated (``values``, one per subspace) and its controls.

    Extras: ``baseline`` (0-d, no ablation), ``dims`` (each subspace's dimension), ``random``
    ``(subspace, n_random)`` (the metric with random subspaces of the same dimension ablated).
    """

    kind = "subspace_ablation"

    @property
    def baseline(self) -> float:
        return float(self.extras["baseline"])

    @property
    def change(self) -> Tensor:
        """Metric with the subspace ablated minus the metric without ablation."""
        return self.values - self.extras["baseline"]

    @property
    def random_mean(self) -> Tensor:
        return self.extras["random"].mean(1)

    def _headline(self) -> str:
        changes = ", ".join(f"{short(name)} {float(self.change[i]):+.3g} (random {float(self.random_mean[i] - self.baseline):+.3g})"
                            for i, name in enumerate(self.labels["subspace"][:3]))
        more = f", ... {len(self.labels['subspace']) - 3} more" if len(self.labels["subspace"]) > 3 else ""
        return f"no ablation {self.baseline:.4g}; change when ablated: {changes}{more}"

    def _summary_lines(self) -> list[str]:
        lines = [f"{'no ablation':>24}: {self.baseline:.4g}",
                 "change when ablated; random subspaces of the same dimension: mean [min, max] change"]
        for i, name in enumerate(self.labels["subspace"]):
            rnd = self.extras["random"][i] - self.extras["baseline"]
            lines.append(f"{short(name):>24}: {float(self.change[i]):+.4g} (dim {int(self.extras['dims'][i])}); random "
                         f"{float(rnd.mean()):+.4g} [{float(rnd.min()):+.4g}, {float(rnd.max()):+.4g}]")
        return lines

    def markdown(self, *, digits: int = 4) -> str:
        """A table: subspace, dimension, metric ablated, change, random subspaces of that dimension."""
        lines = [f"| subspace | dim | {self.metric} ablated | change | random subspaces (mean [min, max]) |",
                 "|---|---|---|---|---|"]
        for i, name in enumerate(self.labels["subspace"]):
            rnd = self.extras["random"][i]
            lines.append(f"| {name} | {int(self.extras['dims'][i])} | {float(self.values[i]):.{digits}g} | "
                         f"{float(self.change[i]):+.{digits}g} | {float(rnd.mean()):.{digits}g} "
                         f"[{float(rnd.min()):.{digits}g}, {float(rnd.max()):.{digits}g}] |")
        lines.append(f"\nNo ablation: {self.metric} = {self.baseline:.{digits}g}.")
        return "\n".join(lines)


def _checked_value(value: Any, label: str) -> Tensor:
    value = torch.as_tensor(value).detach().double().cpu()
    if value.numel() != 1 or not bool(torch.isfinite(value).all()):
        raise InputError(f"subspace_ablation: the metric must return one finite number; for {label} it returned "
                         f"{value.reshape(-1)[:4].tolist()} (shape {tuple(value.shape)})")
    return value.reshape(())


def _one_at_a_time(model: Any, inputs: Any, metric: Callable[[Any], Any], cells: list[Intervention],
                   labels: list[str], kwargs: dict[str, Any], progress: bool) -> list[Tensor]:
    """A custom HookedRootModule's cells: one forward pass of its own input each."""
    out = []
    for iv, label in zip(tqdm(cells, desc="subspace ablation", disable=not progress), labels):
        with torch.no_grad():
            out.append(_checked_value(metric(iv.run(model, inputs, **kwargs)), label))
    return out


def _on_the_engine(model: Any, inputs: Any, metric: Callable[[Any], Any], cells: list[Intervention],
                   labels: list[str], sites: tuple[str, ...], kwargs: dict[str, Any], options: EngineOptions,
                   executor: Executor | None, signature: dict[str, Any], progress: bool) -> tuple[list[Tensor], Any]:
    """A transformer's cells as one engine plan; the unablated run (``cells[0]``, the identity)
    is the plan's base run."""
    extra = sorted(set(kwargs) - {"attention_mask"})
    if extra:
        raise UnsupportedError(f"subspace_ablation: forward_kwargs {extra} can't be honoured by the engine, which "
                               "runs transformers on token ids and their attention_mask only; drop them")
    batch = as_batch(model, inputs, attention_mask=kwargs.get("attention_mask"))
    check_metric(model, metric, batch)
    work = Plan(model, batch, metric, tuple(cells[1:]), tuple((label,) for label in labels[1:]), sites, options,
                label="subspace ablation", signature=signature)
    outcome = execute(work, executor, progress=progress)
    if isinstance(outcome.base, dict):
        raise InputError("subspace_ablation takes one metric, not a MetricSet")
    per_prompt = is_metric(metric)  # (batch,) per prompt: the mean over prompts, as the metric reports
    values = [outcome.base, *outcome.values]
    return [_checked_value(v.float().mean(-1) if per_prompt else v, label) for v, label in zip(values, labels)], outcome


@checked
def subspace_ablation(model: Any, inputs: Any, where: NameFilter, subspaces: Mapping[str, Tensor], *,
                      metric: MetricFn, metric_name: str | None = None, n_random: int = 3, seed: int = 0,
                      forward_kwargs: Mapping[str, Any] | None = None, memory_mb: float = 1024.0,
                      executor: Executor | None = None, progress: bool = True) -> SubspaceAblation:
    """The metric when each subspace is projected out at ``where``, with random-subspace controls.

    Args:
        model: any HookedRootModule (a transformer or a custom toy network).
        inputs: the model's input, passed as ``model(inputs, **forward_kwargs)``.
        where: the site(s) to ablate at (``hook_hidden``, ``blocks.3.hook_resid_post``, ...).
        subspaces: ``{name: basis}``, each basis ``(k, d)`` (or ``(d,)``) spanning a subspace of
            the site's last axis; orthonormalised by ``hooks.project_out``.
        metric: ``model output -> scalar`` (e.g. a cross-entropy loss).
        metric_name: its name in tables (default: the metric's ``name`` or ``__name__``).
        n_random: random subspaces of each dimension to ablate as controls (0 for none).
        seed: seed of the random bases (recorded in provenance).
        forward_kwargs: extra keyword arguments of the forward call (``attention_mask=...``; a
            transformer takes only that one).
        memory_mb: the budget of one stacked forward pass of a transformer's cells.
        executor: where a transformer's cells run (default: this process; ``ti.distributed``).
            A custom HookedRootModule runs here, one cell per forward pass: another executor
            is refused.
        progress: show a progress bar.

    Returns:
        ``SubspaceAblation``; ``.markdown()`` is the table.

    Example:
        >>> import torch
        >>> from tl_interp.models.zoo import S5MLP, all_pairs
        >>> model, (pairs, labels) = S5MLP(), all_pairs()
        >>> loss = lambda logits: torch.nn.functional.cross_entropy(logits, labels[:64])
        >>> table = subspace_ablation(model, pairs[:64], "hook_hidden", {"first": torch.eye(128)[:4]},
        ...                           metric=loss, n_random=2, progress=False)
        >>> table.labels["subspace"], tuple(table.extras["random"].shape)
        (('first',), (1, 2))
    """
    if not subspaces:
        raise OptionError("subspace_ablation: give at least one subspace ({name: basis})")
    if n_random < 0:
        raise OptionError(f"n_random must be >= 0, got {n_random}")
    options = EngineOptions(memory_mb=memory_mb)  # checks the budget before any pass
    kwargs = dict(forward_kwargs or {})
    custom = adapt(model).family == "custom"
    if custom and executor is not None:
        raise UnsupportedError(f"subspace_ablation: {type(model).__name__} is a custom HookedRootModule, which the "
                               "engine's executors can't run (they run transformers); drop executor=")
    if custom and is_metric(metric):  # a tl_interp metric reads each prompt's last real token: bind it to the batch
        metric = metric.at(as_batch(model, inputs, attention_mask=kwargs.get("attention_mask")))
    ablations = {name: hooks.project_out(where, basis) for name, basis in subspaces.items()}
    for iv in ablations.values():
        iv.validate(model)  # names and widths, before any forward pass
    bases = {name: hooks.orthonormal_basis(basis) for name, basis in subspaces.items()}
    generator = torch.Generator().manual_seed(seed)
    cells, labels = [Intervention.identity()], ["no ablation"]
    for name, q in bases.items():
        cells.append(ablations[name])
        labels.append(name)
        for _ in range(n_random):
            cells.append(hooks.project_out(where, torch.randn(q.shape, generator=generator, dtype=torch.float64)))
            labels.append(f"random {q.shape[0]}-dim")
    settings: dict[str, Any] = {"n_random": n_random, "where": str(where)}
    if custom:
        scored = _one_at_a_time(model, inputs, metric, cells, labels, kwargs, progress)
    else:
        signature = {"study": "subspace_ablation", "where": str(where), "seed": seed, "n_random": n_random}
        scored, outcome = _on_the_engine(model, inputs, metric, cells, labels, resolve(model, where), kwargs,
                                         options, executor, signature, progress)
        settings.update(engine=outcome.paths, **outcome.stats)
    baseline, rest = scored[0], scored[1:]
    values, randoms = [], []
    for k in range(len(bases)):
        values.append(rest[k * (1 + n_random)])
        controls = rest[k * (1 + n_random) + 1:(k + 1) * (1 + n_random)]
        randoms.append(torch.stack(controls) if controls else torch.empty(0, dtype=torch.float64))
    described = [d for iv in ablations.values() for d in iv.descriptions]
    prov = Provenance.make(adapt(model).model_id, interventions=described,
                           prompt_hash=prompt_hash(inputs) if isinstance(inputs, (Tensor, str, list)) else "",
                           seed=seed, settings=settings)
    label = metric_name or getattr(metric, "name", None) or getattr(metric, "__name__", "metric")
    return SubspaceAblation(torch.stack(values), ("subspace",), "metric" if label == "<lambda>" else label,
                            prov, {"subspace": tuple(bases)},
                            {"baseline": baseline, "dims": torch.tensor([q.shape[0] for q in bases.values()]),
                             "random": torch.stack(randoms)})
