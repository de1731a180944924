"""What a study tells the engine: its options, its metric checked before any forward pass.

``EngineOptions`` holds every choice that keeps results exact (memory per pass, fast paths,
skipping unchanged cells, gradients); ``check_metric`` binds a metric to the batch and runs it
on dummy logits so a metric that can't read the batch fails first; ``Staged`` is a metric that
depends on the base run; ``forward_layout`` is the weight layout a study holds while it runs.
``engine.run`` (the base run and its passes) uses them; studies import them from here or there.
"""

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from tl_interp import compat
from tl_interp.engine.passes import CostModel
from tl_interp.errors import InputError, OptionError
from tl_interp.metrics import bind, is_metric
from tl_interp.models._adapter import Tokenized
from tl_interp.sites import d_vocab_out

__all__ = ["EngineOptions", "Values", "check_metric", "Staged", "forward_layout"]

Values = Tensor | dict[str, Tensor]


@dataclass(frozen=True)
class EngineOptions:
    """How the engine may run a study's cells (every option keeps results exact).

    Attributes:
        memory_mb: budget of one stacked forward pass (see ``engine.passes``).
        fast_paths: allow the fast paths (False: every pass is the model's full forward).
        skip_unchanged: give cells whose edit changes nothing the base value without a pass.
        grad: keep the autograd graph through the passes (integrated gradients).
        cost: the pass planner's constants.
    """

    memory_mb: float = 1024.0
    fast_paths: bool = True
    skip_unchanged: bool = True
    grad: bool = False
    cost: CostModel = field(default_factory=CostModel)

    def __post_init__(self) -> None:
        if not self.memory_mb > 0:
            raise OptionError(f"memory_mb must be positive, got {self.memory_mb}")


def scalar(value: Any) -> Tensor:
    """A plain metric's value, which must be a 0-dim tensor (TransformerLens's convention)."""
    if not isinstance(value, Tensor) or value.ndim != 0:
        got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise InputError(f"the metric must return a scalar (0-dim tensor) for logits (batch, pos, d_vocab), as "
                         f"TransformerLens's patching functions expect; it returned {got}. Reduce over the batch "
                         "(e.g. .mean()) or pass a tl_interp.metrics metric")
    return value


@dataclass(frozen=True, eq=False)
class Staged:
    """A metric that depends on the base run: ``first`` is read from the base run's logits,
    then ``then(first's base values)`` scores the base run and every cell (e.g. "the logit
    difference against the unsteered top token"). One base forward pass serves both."""

    first: Any
    then: Callable[[Values], Any]


def forward_layout(model: Any, options: EngineOptions, *, unembed: bool = True) -> contextlib.AbstractContextManager[None]:
    """TL's weights stored the way its forward multiplies by them, inside the block
    (``compat.layout``: bit-identical results without TL's per-call copy of every weight
    matrix); a study wraps its base run, its passes and any other forward of the same model.
    Off with ``fast_paths=False``, with gradients, and on anything but a HookedTransformer.
    ``unembed=False``: not ``W_U`` (a study whose passes never run TL's own unembedding)."""
    on = (options.fast_paths and not options.grad and compat.is_hooked_transformer(model)
          and compat.usable("layout"))
    return compat.layout.forward_layout(model, enabled=on, unembed=unembed)


def check_metric(model: Any, metric: Callable[..., Any], batch: Tokenized) -> Callable[..., Any]:
    """Bind the metric to the batch and call it on dummy logits, so a metric that cannot read
    this batch, or returns the wrong shape, fails before any forward pass. Returns it bound."""
    bound = bind(metric, batch)
    dummy = torch.zeros(*batch.shape, d_vocab_out(model), device=batch.tokens.device)
    try:
        with torch.no_grad():
            out = bound.per_prompt(dummy) if is_metric(bound) else bound(dummy)
    except (InputError, OptionError):
        raise
    except Exception as err:  # a metric that cannot even take logits of the right shape
        raise InputError(f"the metric failed on logits of shape (batch, pos, d_vocab) = {tuple(dummy.shape)}: "
                         f"{type(err).__name__}: {err}") from err
    if not is_metric(bound):
        scalar(out)
    return bound
