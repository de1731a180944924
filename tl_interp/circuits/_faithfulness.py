"""Exact faithfulness of circuits, many circuits per stacked forward pass.

A circuit is a set of edges. Evaluating it runs the clean prompts with every edge *outside* it
carrying its sender's ablated value (corrupted, mean or zero) -- exactly, receiver by receiver,
while edges inside it carry the sender's current value (the reference's ``evaluate_graph``).
Each circuit is one cell of the engine (``_edit.circuit_edit``: one edge mask per cell), so
many circuits share a stacked pass. MIB's faithfulness of a circuit C is
``f = (m(C) - m(empty)) / (m(full) - m(empty))`` with m the mean metric over prompts: 1 when the
circuit recovers the full model's behaviour, 0 when it does no better than ablating everything.
Unlike the reference, circuits are not pruned first: an edge whose sender has no incoming edge
in the circuit carries the value its ablated inputs give it, which is its ablated value.
"""

import contextlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from tl_interp._checks import checked, reordered
from tl_interp.circuits._edit import circuit_edit
from tl_interp.circuits._graph import Graph
from tl_interp.circuits._rows import CircuitRows, rows_reason
from tl_interp.circuits._runs import (ablated_values, no_head_results, prepare, sender_names, sender_values,
                                      senders_from)
from tl_interp import compat
from tl_interp.engine.executors import Executor, LocalExecutor, Plan, execute
from tl_interp.engine.inputs import Inputs
from tl_interp.engine.run import BaseRun, EngineOptions, forward_layout
from tl_interp.errors import InputError, OptionError, UnsupportedError
from tl_interp.metrics import bind, is_metric
from tl_interp.models._adapter import Tokenized, adapt
from tl_interp.results import Provenance, Result, bounded, prompt_hash, register_result

__all__ = ["Faithfulness", "faithfulness"]

_SAME = 1e-5  # a relative gap this small between the full and the empty circuit is float32 rounding


@register_result
@dataclass(frozen=True, eq=False, repr=False)
class Faithfulness(Result):
    """The metric of each circuit on each prompt: ``values`` (``circuit``, ``prompt``).

    ``extras["clean"]`` is the full model per prompt, ``extras["corrupted"]`` the empty circuit
    (every edge ablated: the corrupted run with ``ablation="corrupted"``), ``extras["n_edges"]``
    each circuit's size.
    """

    kind: ClassVar[str] = "faithfulness"

    @property
    def clean(self) -> Tensor:
        return self.extras["clean"]

    @property
    def corrupted(self) -> Tensor:
        return self.extras["corrupted"]

    @property
    def normalized(self) -> Tensor:
        """MIB's f per circuit: ``(mean circuit - mean empty) / (mean full - mean empty)``.

        An error when the full model and the empty circuit give the same mean metric (no gap
        to normalise by)."""
        clean, empty = self.clean.double().mean(), self.corrupted.double().mean()
        gap = clean - empty
        if float(gap.abs()) <= _SAME * (1 + max(float(clean.abs()), float(empty.abs()))):
            raise UnsupportedError(f"the full model and the empty circuit give the same mean metric "
                                   f"({float(clean):.6g} vs {float(empty):.6g}), so f is undefined; read .values")
        return ((self.values.double().mean(1) - empty) / gap).float()

    def __repr__(self) -> str:
        try:
            f = ", ".join(f"{v:.3g}" for v in self.normalized.tolist()[:6])
        except UnsupportedError:
            f = "undefined"
        if self.values.shape[0] > 6:
            f += f", ... {self.values.shape[0] - 6} more"
        return bounded(f"Faithfulness({self.metric}; {self.values.shape[0]} circuits, {self.values.shape[1]} prompts; "
                       f"f: {f}; {self.provenance_line()})")

    def _summary_lines(self) -> list[str]:
        lines = [f"{'full model':>24}: {float(self.clean.double().mean()):.4g} (mean over prompts)",
                 f"{'empty circuit':>24}: {float(self.corrupted.double().mean()):.4g}"]
        try:
            f = self.normalized.tolist()
        except UnsupportedError:
            f = [float("nan")] * self.values.shape[0]
        sizes = self.extras.get("n_edges")
        for i, value in enumerate(f):
            size = f", {int(sizes[i])} edges" if sizes is not None else ""
            lines.append(f"{self.label('circuit', i):>24}: f={value + 0.0:.4g} (metric {float(self.values[i].double().mean()):.4g}"
                         f"{size})")
        return lines


def _edge_sets(g: Graph, circuits: Sequence[Any]) -> Tensor:
    """``(circuit, edge)`` bool: the edges of each circuit (one write for all of them)."""
    rows: list[int] = []
    ids: list[int] = []
    for i, circuit in enumerate(circuits):
        edges = getattr(circuit, "edges", circuit)
        if isinstance(edges, str) or not isinstance(edges, Collection):
            raise InputError(f"circuit {i}: give a collection of edge names (or an object with .edges), not "
                             f"{type(circuit).__name__}")
        try:  # the graph's own table of names first (a circuit at a large budget names thousands of edges)
            mine = [g._index[edge] for edge in edges]
        except (KeyError, TypeError):
            mine = [g.index(edge) for edge in edges]  # unknown names fail here, with the closest names
        ids += mine
        rows += [i] * len(mine)
    keep = torch.zeros(len(circuits), len(g.edges), dtype=torch.bool)
    keep[torch.tensor(rows, dtype=torch.long), torch.tensor(ids, dtype=torch.long)] = True
    return keep


def _senders(model: Any, g: Graph, clean: Tokenized, corrupted: Tokenized | None,
             base: dict[str, Any] | None) -> tuple[Tensor, Tensor | None]:
    """``sender_values`` of the clean batch (filling ``base`` from the same pass) and of the
    corrupted one (None: not needed), in one forward pass when both have one shape."""
    if corrupted is None or corrupted.shape != clean.shape:
        return sender_values(model, g, clean, base)[0], None
    rows = clean.shape[0]
    both = Tokenized(torch.cat([clean.tokens, corrupted.tokens]),
                     torch.cat([clean.attention_mask, corrupted.attention_mask]),
                     torch.cat([clean.last_index, corrupted.last_index]), clean.str_tokens + corrupted.str_tokens)
    values, _ = sender_values(model, g, both, base)
    for name, act in (base or {}).items():
        base[name] = act[:rows]  # type: ignore[index]
    return values[:rows], values[rows:]


def _corrupted_alone(ablation: str, clean: Tokenized, corrupted: Tokenized) -> bool:
    """Whether the corrupted run alone gives what circuit rows read: the ablated values, and residual
    streams on the clean prompts' positions (the same attention mask)."""
    return (ablation == "corrupted" and corrupted.shape == clean.shape
            and torch.equal(corrupted.attention_mask, clean.attention_mask))


def _embeddings(model: Any, batch: Tokenized) -> Tensor:
    """The token embeddings of ``batch`` (what ``hook_embed`` holds: the input node), zero on padding."""
    with torch.no_grad():
        embed = model.embed(batch.tokens)
    return embed * batch.attention_mask.to(embed.device, embed.dtype)[:, :, None]


def _circuits_first(args: tuple[Any, ...]) -> bool:
    """``faithfulness(model, circuits, clean, ...)``: a sequence of circuits (not prompts) came second."""
    first = args[1] if len(args) > 1 else None
    return (isinstance(first, Sequence) and not isinstance(first, str) and len(first) > 0
            and not any(isinstance(c, str) for c in first))


@reordered(("model", "circuits", "clean", "corrupted"), _circuits_first)
@checked
def faithfulness(model: Any, clean: Inputs, corrupted: Inputs, circuits: Sequence[Any], metric: Callable[..., Any],
                 *, ablation: Literal["corrupted", "mean", "zero"] = "corrupted",
                 per_position: bool = False, memory_mb: float = 1024.0,
                 executor: Executor | None = None, progress: bool = True) -> Faithfulness:
    """Evaluate circuits exactly: edges outside each carry their ablated value.

    Args:
        model: a pre-norm HookedTransformer (``ti.circuits.graph`` says which).
        clean, corrupted: prompts, as in ``attribute``.
        circuits: each a collection of edge names (MIB names) or an object with ``.edges``
            (after the prompts: the old order ``(model, circuits, clean, ...)`` warns).
        metric: a ``ti.metrics`` metric.
        ablation: what edges outside a circuit carry: ``"corrupted"``, ``"mean"`` (over the
            corrupted prompts) or ``"zero"``.
        per_position: ``False``: circuits of edges (an edge carries its sender at every position);
            ``True``: circuits of edges at positions (``a0.h1_3->a1.h0_3<k>``, as
            ``attribute(per_position=True)`` names them), for prompts of one token length.
        memory_mb: budget of one stacked pass.
        executor: where the cells run.
        progress: show a progress bar.

    Returns:
        ``Faithfulness``: values per circuit and prompt, both baselines, ``normalized`` (f).

    Example:
        >>> import torch, tl_interp as ti
        >>> from transformer_lens import HookedTransformer, HookedTransformerConfig
        >>> cfg = HookedTransformerConfig(n_layers=2, d_model=16, n_heads=2, d_head=8, n_ctx=8,
        ...                               d_vocab=10, act_fn="relu", d_mlp=32, seed=0)
        >>> model = HookedTransformer(cfg)
        >>> clean, corrupt = torch.tensor([[1, 2, 3, 4]]), torch.tensor([[1, 2, 5, 4]])
        >>> every = ti.circuits.graph(model).edges
        >>> f = ti.circuits.faithfulness(model, clean, corrupt, [every, []], ti.metrics.logit_diff(3, 5), progress=False)
        >>> [round(v, 4) + 0.0 for v in f.normalized.tolist()]
        [1.0, 0.0]
    """
    g, clean_b, corrupt_b = prepare(model, clean, corrupted, metric, ablation, differentiable=False)
    if isinstance(circuits, str) or not isinstance(circuits, Sequence) or not circuits:
        raise InputError("circuits must be a non-empty sequence of circuits (each a collection of edge names)")
    if not isinstance(per_position, bool):
        raise OptionError(f"per_position must be True or False, not {per_position!r}")
    named = g
    if per_position:
        if clean_b.padded:
            raise InputError("per_position=True circuits name edges at positions, so every prompt must have the same "
                             f"token length; this batch is padded (real lengths {clean_b.attention_mask.sum(1).tolist()})"
                             ". Evaluate prompts of one length together, or per_position=False")
        named = g.at_positions(clean_b.shape[1])
    keeps = _edge_sets(named, circuits)
    if per_position:
        keeps = keeps.reshape(len(circuits), len(g.edges), -1)
    # identical circuits are evaluated once, the full circuit (nothing to edit) is the base run itself
    masks = torch.cat([keeps, torch.zeros_like(keeps[:1])])  # the last: the empty circuit
    distinct, inverse = torch.unique(masks.flatten(1), dim=0, return_inverse=True)
    distinct = distinct.reshape(-1, *masks.shape[1:])
    run = [i for i in range(len(distinct)) if not bool(distinct[i].all())]
    norms = compat.attention_output_norms(model)
    why = rows_reason(model, norms, per_position)
    # only the residual stream entering layer 0 (passes start there): checking which cells change
    # nothing would run every cell's edits once more on the base activations
    sites, options = ("blocks.0.hook_resid_pre",), EngineOptions(memory_mb=memory_mb)
    engine_base: BaseRun | None = None  # the engine's base run, when made here
    with contextlib.ExitStack() as held:
        held.enter_context(compat.receiver_hooks(model, mlp_in=True, ungroup=True))
        held.enter_context(no_head_results(model))
        if executor is None and why is None:  # TL's weights re-laid out once (compat.layout), in the mode the rows'
            held.enter_context(forward_layout(model, options))  # passes run in: the senders, base run and passes
        base = dict.fromkeys(CircuitRows.base_names(model, g)) if why is None else None  # read in the same pass
        clean_s, empty_values = None, None
        if base is not None and _corrupted_alone(ablation, clean_b, corrupt_b):
            # the rows need the clean run's embeddings only (the engine's base run is the clean run):
            # the corrupted run's residual streams check the constants (same positions, same positional
            # embeddings). Run locally, the corrupted prompts ride in the engine's base run (one forward
            # pass over both batches); an executor makes its own base run, so they run alone
            if executor is None:
                engine_base = BaseRun(model, clean_b, metric, sites, options, alongside=corrupt_b,
                                      alongside_names=sender_names(g) + list(base))
                acts = engine_base.alongside_acts
                other, base = senders_from(model, g, acts, corrupt_b), {name: acts[name] for name in base}
                senders_read = "corrupted prompts, in the clean base run's forward pass"
            else:
                other, corrupt_logits = sender_values(model, g, corrupt_b, base)
                senders_read = "corrupted prompts alone"
            empty = int(inverse[-1])
            if is_metric(metric) and empty in run and len(run) > 1:
                # the empty circuit (every edge carries its corrupted value, the same attention mask) is the
                # corrupted run itself: its metric is read from that run's logits, not from a stacked cell
                with torch.no_grad():
                    empty_values = (engine_base.alongside_values if engine_base is not None  # type: ignore[assignment]
                                    else bind(metric, clean_b).per_prompt(corrupt_logits[None])[0])
                run.remove(empty)
            rows = CircuitRows(model, g, distinct[run], other, _embeddings(model, clean_b), base, other,
                               clean_b.attention_mask)
        else:
            clean_s, corrupt_s = _senders(model, g, clean_b, corrupt_b if ablation != "zero" else None, base)
            senders_read = "clean prompts" + (" and corrupted prompts" if corrupt_s is not None or ablation == "mean" else "")
            other = ablated_values(model, g, ablation, clean_b, corrupt_b, clean_s, corrupt_s)
            rows = (CircuitRows(model, g, distinct[run], other, clean_s[:, :, 0], base, clean_s,  # type: ignore[arg-type]
                                clean_b.attention_mask)
                    if why is None else None)
        why = why if rows is None else rows.reason
        if why is not None and empty_values is not None:  # the residual stream holds more than the graph's senders
            run, empty_values = sorted([*run, int(inverse[-1])]), None
        if why is not None and clean_s is None:  # the per-head cells read the clean run's senders
            clean_s = sender_values(model, g, clean_b)[0]
            senders_read = "corrupted prompts, then clean prompts"
            engine_base = None  # their passes run TL's per-head inputs: the engine makes its base run with them
        if why is not None:  # ... in another mode (split q/k/v inputs), for which the engine lays out its own
            held.close()
        # the passes read heads' outputs from hook_z (no per-head results: see circuit_edit)
        with compat.receiver_hooks(model, split_qkv=why is not None, mlp_in=True, ungroup=True), no_head_results(model):
            if why is None:
                cells = [rows.cell(k, f"circuit {i}") for k, i in enumerate(run)]  # type: ignore[union-attr]
            else:
                w_o = [block.attn.W_O.detach() for block in model.blocks]
                cells = [circuit_edit(g, distinct[i], other, clean_s, f"circuit {i}", norms, w_o) for i in run]
            plan = Plan(model, clean_b, metric, tuple(cells), tuple((i,) for i in run), sites, options,
                        label="circuits", signature={"study": "circuits.faithfulness", "ablation": ablation})
            outcome = execute(plan, executor if engine_base is None else LocalExecutor(engine_base), progress=progress)
    by_distinct = outcome.base[None].repeat(len(distinct), 1)
    by_distinct[run] = outcome.values
    if empty_values is not None:
        by_distinct[int(inverse[-1])] = empty_values.to(by_distinct.device, by_distinct.dtype)
    values = by_distinct[inverse].float().cpu()
    stats = {**outcome.stats, "circuits_evaluated": len(run),
             "circuit_rows": "on" if why is None else f"off: {why}", "senders_read": senders_read,
             "empty_circuit": "the corrupted run" if empty_values is not None else "a stacked cell"}
    settings = {"ablation": ablation, "graph": named.spec(), "engine": outcome.paths, **stats}
    provenance = Provenance.make(adapt(model).model_id,
                                 interventions=[f"edges outside each circuit carry their {ablation} value"],
                                 prompt_hash=prompt_hash(clean_b.tokens, corrupt_b.tokens), settings=settings)
    n_edges = keeps.flatten(1).sum(1).float()
    labels = {"circuit": tuple(f"circuit {i} ({int(n)} edges)" for i, n in enumerate(n_edges.tolist())),
              "prompt": tuple(str(i) for i in range(values.shape[1]))}
    return Faithfulness(values=values[:-1], axes=("circuit", "prompt"), metric=str(getattr(metric, "name", "metric")),
                        provenance=provenance, labels=labels,
                        extras={"clean": outcome.base.float().cpu(), "corrupted": values[-1], "n_edges": n_edges})
