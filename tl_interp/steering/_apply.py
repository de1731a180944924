"""Applying steering vectors to many prompts, vectors and scales at once, on the one engine.

Every (vector, scale) pair is a *variant*: the cell ``vector.intervention(scale, positions)``.
Prompts are grouped by token length (so no row is padded) and every group is one engine run:
its variants are stacked along the batch, each pass starts from the unsteered residual stream
at the steered layer, and with ``positions="last"`` it runs only the last position (the
positions before it are the unsteered run's: their keys and values are reused). A scale of 0
is the unsteered model exactly and costs no forward pass.

Generation (``generate``) runs ``model.generate`` under the stacked variants; positions keep
their meaning as the sequence grows (``"last"`` is each newly generated token, ``"all"`` every
token, an int one fixed position of the prompt).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tl_interp._checks import checked, renamed
from tl_interp.compat import reusing_unembed_weight
from tl_interp.engine.executors import Executor, Plan, execute
from tl_interp.engine.inputs import Inputs, as_batch, by_length, context_length
from tl_interp.engine.run import EngineOptions
from tl_interp.engine.stack import bound_cells, stack
from tl_interp.errors import InputError, OptionError
from tl_interp.intervention import Intervention
from tl_interp.metrics import Metric
from tl_interp.models._adapter import Tokenized
from tl_interp.positions import Positions
from tl_interp.steering._vector import SteeringVector, rule_label

__all__ = ["next_token_logits", "generate", "check_vectors", "Variant", "variants", "run_variants"]


@dataclass(frozen=True)
class Variant:
    """One steered condition: a vector and its scale."""

    vector: SteeringVector
    scale: float

    def cell(self, positions: Positions) -> Intervention:
        return self.vector.intervention(self.scale, positions)


def check_vectors(model: Any, vectors: Sequence[SteeringVector], context: str,
                  scales: Sequence[float] = (1.0,)) -> None:
    """Every check a run would make (site exists, width fits, SAE matches, scale x vector fits
    the model's dtype), for every (vector, scale), before any forward pass."""
    if not vectors:
        raise InputError(f"{context}: no steering vectors given")
    for v in vectors:
        for scale in scales:
            v.intervention(scale).validate(model)


def _scales(scales: Sequence[float] | float, context: str) -> list[float]:
    values = [float(scales)] if isinstance(scales, (int, float)) else [float(m) for m in scales]
    if not values:
        raise OptionError(f"{context}: no scales given")
    bad = [m for m in values if m != m or m in (float("inf"), float("-inf"))]
    if bad:
        raise InputError(f"{context}: scales must be finite numbers, got {bad}")
    return values


def variants(vectors: Sequence[SteeringVector] | SteeringVector, scales: Sequence[float] | float,
             context: str = "steering") -> list[Variant]:
    """Every (vector, scale) pair, vector-major."""
    vs = [vectors] if isinstance(vectors, SteeringVector) else list(vectors)
    return [Variant(v, m) for v in vs for m in _scales(scales, context)]


_LOGITS = Metric("logits", "last", lambda x: x)


def run_variants(model: Any, batch: Tokenized, cells: Sequence[Intervention], metric_for: Callable[[list[int]], Any],
                 *, options: EngineOptions, executor: Executor | None, label: str,
                 progress: bool) -> tuple[dict[str, Tensor] | Tensor, dict[str, Tensor] | Tensor]:
    """``(steered, unsteered)`` values of ``cells`` on ``batch``, one engine run per token length.

    Args:
        metric_for: the metric of a group of rows (indices into ``batch``), e.g. with those
            rows' answers.

    Returns per-prompt values in the batch's row order: steered ``(n_cells, batch, ...)``,
    unsteered ``(batch, ...)`` (dicts of them for a MetricSet or staged metric).
    """
    sites = tuple(dict.fromkeys(name for cell in cells for hook in cell for name in _names(model, hook)))
    steered_parts, base_parts, rows_order = [], [], []
    with reusing_unembed_weight():  # one unembedding matrix layout for every group
        for rows, group in by_length(batch):
            plan = Plan(model, group, metric_for(rows), tuple(cells), tuple((i,) for i in range(len(cells))), sites,
                        options, label=label, signature={"study": "steering", "rows": rows})
            outcome = execute(plan, executor, progress=progress)
            steered_parts.append(outcome.values)
            base_parts.append(outcome.base)
            rows_order += rows
    inverse = torch.empty(len(rows_order), dtype=torch.long)
    inverse[torch.tensor(rows_order)] = torch.arange(len(rows_order))

    def gather(parts: list[Any], axis: int) -> Any:
        if isinstance(parts[0], dict):
            return {k: torch.cat([p[k] for p in parts], axis).index_select(axis, inverse) for k in parts[0]}
        return torch.cat(parts, axis).index_select(axis, inverse)

    return gather(steered_parts, 1), gather(base_parts, 0)


def _names(model: Any, hook: Any) -> list[str]:
    from tl_interp.sites import resolve

    return list(resolve(model, hook.where))


@renamed(multipliers="scales", prompts="inputs")
@checked
def next_token_logits(model: Any, inputs: Inputs, vectors: Sequence[SteeringVector] | SteeringVector,
                      scales: Sequence[float] | float, *, positions: Positions = "all", memory_mb: float = 1024.0,
                      fast_paths: bool = True, executor: Executor | None = None, progress: bool = False) -> Tensor:
    """Next-token logits of every prompt under every (vector, scale), batched.

    Returns:
        ``(vector, scale, prompt, d_vocab)`` logits at each prompt's last real token.

    Example:
        >>> import torch
        >>> from tl_interp.models import load
        >>> model = load("ordinal-4l")
        >>> v = SteeringVector(torch.randn(128), "blocks.2.hook_resid_pre")
        >>> next_token_logits(model, ["one , two ,", "after may comes"], v, [0.0, 4.0]).shape
        torch.Size([1, 2, 2, 89])
    """
    batch = as_batch(model, inputs)
    vs = [vectors] if isinstance(vectors, SteeringVector) else list(vectors)
    var = variants(vs, scales, "next_token_logits")
    check_vectors(model, vs, "next_token_logits", sorted({v.scale for v in var}, key=abs)[-1:])
    steered, _ = run_variants(model, batch, [v.cell(positions) for v in var], lambda rows: _LOGITS,
                              options=EngineOptions(memory_mb=memory_mb, fast_paths=fast_paths), executor=executor,
                              label="steering", progress=progress)
    return steered.view(len(vs), -1, len(batch), steered.shape[-1])  # type: ignore[union-attr]


@renamed(multipliers="scales", prompts="inputs")
@checked
def generate(model: Any, inputs: Inputs, vectors: Sequence[SteeringVector] | SteeringVector,
             scales: Sequence[float] | float, *, positions: Positions = "all", max_new_tokens: int = 20,
             **generate_kwargs: Any) -> list[dict[str, Any]]:
    """Greedy (by default) generation under ``scale * vector`` for every vector, scale and prompt.

    Prompts of the same token length are generated together, one row per (vector, scale,
    prompt); ``positions`` keeps its meaning as tokens are generated (``"last"``: every newly
    generated token is steered as it is the last; ``"all"``: every token; ``From(k)``: every
    token from the k-th on; an int: that prompt position only).

    Returns:
        One dict per (vector, scale, prompt): ``vector`` (its name), ``prompt``, ``scale``,
        ``completion`` (the generated text only).

    Example:
        >>> import torch
        >>> from tl_interp.models import load
        >>> model = load("ordinal-4l")
        >>> v = SteeringVector(torch.zeros(128), "blocks.2.hook_resid_pre")
        >>> [r["completion"].split()[0] for r in generate(model, "one , two ,", v, [0.0], max_new_tokens=3)]
        ['three']
    """
    if isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise OptionError(f"generate: max_new_tokens must be at least 1, got {max_new_tokens}")
    batch = as_batch(model, inputs)
    n_ctx = context_length(model)
    longest = int(batch.attention_mask.sum(1).max())
    if n_ctx is not None and longest + max_new_tokens > n_ctx:
        raise InputError(f"generate: the longest prompt has {longest} tokens; with max_new_tokens={max_new_tokens} "
                         f"the sequence would pass the model's context of n_ctx={n_ctx}")
    vs = [vectors] if isinstance(vectors, SteeringVector) else list(vectors)
    var = variants(vs, scales, "generate")
    check_vectors(model, vs, "generate", sorted({v.scale for v in var}, key=abs)[-1:])
    generate_kwargs.setdefault("do_sample", False)
    generate_kwargs.setdefault("verbose", False)
    texts = [" ".join(s) for s in batch.str_tokens] if not isinstance(inputs, (str, list, tuple)) else (
        [inputs] if isinstance(inputs, str) else list(inputs))
    done: dict[tuple[int, int], str] = {}
    for rows, group in by_length(batch):
        n, length = len(rows), group.shape[1]
        stacked = stack(bound_cells(model, [v.cell(positions) for v in var]), n,
                        f"steer ({rule_label(positions)}) while generating")
        with stacked.applied(model):
            out = model.generate(group.tokens.repeat(len(var), 1), max_new_tokens=max_new_tokens, **generate_kwargs)
        for r in range(out.shape[0]):
            v, p = divmod(r, n)
            done[(v, rows[p])] = model.to_string(out[r, length:])
    return [{"vector": var[v].vector.name, "prompt": texts[p], "scale": var[v].scale, "completion": done[(v, p)]}
            for v in range(len(var)) for p in range(len(batch))]
