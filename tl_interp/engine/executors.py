"""Executors: where a plan's cells run. ``LocalExecutor`` runs them in this process.

A ``Plan`` is everything a study fixes before its first forward pass: the model, the checked
base batch, the metric, the cells (interventions, each with a key naming its place in the
study's grid), the sites they edit and the engine options. Any executor takes a plan and
returns an ``Outcome`` with the same values, so a distributed executor (``ti.distributed``)
can shard the cells without changing a study.
"""

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from tqdm.auto import tqdm

from tl_interp.engine.run import BaseRun, EngineOptions, Values, forward_layout
from tl_interp.intervention import Intervention
from tl_interp.models._adapter import Tokenized

__all__ = ["Plan", "Outcome", "Executor", "LocalExecutor", "execute"]


@dataclass(frozen=True, eq=False)
class Plan:
    """The cells of a study on one base batch, fixed before any forward pass.

    Attributes:
        model: the model.
        batch: the base run's inputs.
        metric: the metric (bound to the batch by the engine).
        cells: one intervention per cell.
        keys: each cell's place in the study's grid (e.g. ``(layer, pos)``), for labels and
            content-addressed shards.
        sites: the hook names the cells edit.
        options: engine options.
        label: progress-bar label.
        signature: what identifies the study besides model and inputs (site, grid, seed ...).
    """

    model: Any
    batch: Tokenized
    metric: Any  # a metric, MetricSet, plain function, or engine.run.Staged
    cells: tuple[Intervention, ...]
    keys: tuple[tuple[Any, ...], ...]
    sites: tuple[str, ...]
    options: EngineOptions = field(default_factory=EngineOptions)
    label: str = "cells"
    signature: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.keys) != len(self.cells):
            raise ValueError(f"{len(self.keys)} keys for {len(self.cells)} cells")


@dataclass(frozen=True)
class Outcome:
    """What running a plan gives: every cell's value, the base value, and how it ran."""

    values: Values
    base: Values
    paths: dict[str, str]
    stats: dict[str, Any]


@runtime_checkable
class Executor(Protocol):
    """Runs a plan's cells somewhere and returns their values in the plan's order."""

    def run(self, plan: Plan, *, progress: bool = True) -> Outcome: ...


class LocalExecutor:
    """Runs every cell in this process, through one ``BaseRun``.

    Args:
        base: a base run the study already made for the plan (the same model, batch, metric,
            sites and options; e.g. with another batch ``alongside``), used instead of a new one.
    """

    base: BaseRun | None = None  # also for subclasses that don't call this __init__

    def __init__(self, base: BaseRun | None = None) -> None:
        self.base = base

    def run(self, plan: Plan, *, progress: bool = True, cells: Sequence[int] | None = None) -> Outcome:
        """Run ``plan`` (or only the cells at the indices ``cells``)."""
        given = self.base
        if given is not None and not (given.model is plan.model and given.batch is plan.batch
                                      and given.given_metric is plan.metric and given.sites == tuple(plan.sites)
                                      and given.options == plan.options):
            raise ValueError("LocalExecutor(base=...): the base run was made for another plan "
                             "(model, batch, metric, sites and options must be the plan's)")
        # one weight re-layout for the base run and every pass (a given base run is made: evaluate lays out its own)
        with forward_layout(plan.model, plan.options) if given is None else contextlib.nullcontext():
            base = given or BaseRun(plan.model, plan.batch, plan.metric, plan.sites, plan.options)
            chosen = plan.cells if cells is None else tuple(plan.cells[i] for i in cells)
            with tqdm(total=len(chosen), desc=plan.label, disable=not progress) as bar:
                values = base.evaluate(chosen, bar.update)
        return Outcome(values, base.values, base.paths, {**base.stats, "executor": "local", "workers": 1})


def execute(plan: Plan, executor: Executor | None = None, *, progress: bool = True) -> Outcome:
    """Run ``plan`` on ``executor`` (default: this process)."""
    return (executor or LocalExecutor()).run(plan, progress=progress)
