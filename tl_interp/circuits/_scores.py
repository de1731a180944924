"""Edge attribution: EAP, EAP-IG (over inputs, over activations) and exact single-edge patching.

Every method scores an edge ``s -> r`` by the change of the metric when ``r`` reads ``s``'s
ablated value instead of its clean one, everything else clean (``ablated - clean``: negative
where the edge supports a metric the corruption lowers). With ``D_s = s_ablated - s_clean``
summed over positions and ``d_model`` (the reference's ``aggregation="sum"``):

- ``"eap"`` (Syed et al. 2023): ``D_s . dM/dr`` at the clean run -- one corrupted forward, one
  clean forward and one backward.
- ``"eap-ig-inputs"`` (Hanna et al. 2024): ``D_s . mean_k dM/dr`` over ``steps`` runs whose token
  embeddings are ``corrupted + k/steps (clean - corrupted)``, ``k = 0 .. steps-1`` (the
  reference's points: the corrupted end included, the clean end not).
- ``"eap-ig-activations"`` (the reference's ``EAP-IG-activations``): for each node output in
  turn -- the embeddings, each layer's heads together, each MLP -- ``steps`` runs with that
  output at ``alpha clean + (1 - alpha) ablated``, ``alpha = k/steps``, ``k = 1 .. steps``;
  ``D_s`` times the mean gradient over all (node, step) runs.
- ``"exact"``: the metric with that one edge patched, minus the clean metric (the reference's
  ``get_scores_exact``), every edge a cell of the batched engine.

Scores are the mean over prompts of per-prompt scores (``per_prompt``); the reference divides a
batch-level metric's gradient by the number of prompts, which is the same for a metric summed
over the batch. Differences from the reference, on purpose: padded batches of unequal lengths
work (padding contributes nothing); gradients are read by adding a zero tensor at every
receiver input, so in EAP-IG-activations' runs that hold the embeddings fixed the layer-0
inputs still get their gradient (the reference's backward hooks never fire there unless a
learned positional embedding makes those inputs require grad: on rotary models its
EAP-IG-activations scores differ from ours for that reason alone); a ``"mean"`` ablation interpolates EAP-IG-activations
towards the mean (the reference interpolates towards zero there); grouped-query attention is
scored per query head from TransformerLens's ungrouped computation (``compat.receiver_hooks(ungroup=True)``),
equal to the scores of the model with its K/V weights copied per head; where a layer normalises
its attention output (Gemma's ``ln1_post``) a head's ``D_s`` is what it changes in that output,
``norm(A + h_ablated - h_clean) - norm(A)`` (``_edit.sender_deltas``; the reference multiplies
the gradient by the raw ``h_ablated - h_clean`` there, ignoring the norm).
"""

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from tl_interp import hooks
from tl_interp.results._ranking import Ranking, check_k
from tl_interp._checks import check_count, checked
from tl_interp.circuits._edit import sender_deltas, sender_hooks
from tl_interp.circuits._exact import exact_study
from tl_interp.circuits._graph import Graph
from tl_interp.circuits._runs import ablated_values, forward_kw, no_head_results, prepare, run_values, sender_values
from tl_interp import compat
from tl_interp.engine.executors import Executor, LocalExecutor
from tl_interp.engine.inputs import Inputs
from tl_interp.engine.run import BaseRun, EngineOptions
from tl_interp.errors import InputError, OptionError, UnsupportedError
from tl_interp.intervention import Intervention
from tl_interp.metrics import bind
from tl_interp.models._adapter import adapt
from tl_interp.results import Provenance, Result, bounded, prompt_hash, register_result, short

__all__ = ["EdgeScores", "attribute", "METHODS"]

METHODS = ("eap", "eap-ig-inputs", "eap-ig-activations", "exact")
Method = Literal["eap", "eap-ig-inputs", "eap-ig-activations", "exact"]
Ablation = Literal["corrupted", "mean", "zero"]


@register_result
@dataclass(frozen=True, eq=False, repr=False)
class EdgeScores(Result):
    """A score per edge of a model's graph: ``values`` (``edge``), labelled with the edge names.

    ``extras["per_prompt"]`` holds ``(n_prompts, n_edges)`` per-prompt scores (for intervals),
    ``extras["clean"]`` / ``extras["corrupted"]`` the per-prompt metric of both runs.
    """

    kind: ClassVar[str] = "edge_scores"

    @property
    def graph(self) -> Graph:
        """The graph the edges belong to."""
        return Graph(**self.provenance.settings["graph"])

    @property
    def names(self) -> tuple[str, ...]:
        """Edge names, in the graph's order."""
        return self.labels["edge"]

    @property
    def scores(self) -> Tensor:
        """``(n_edges,)``: the mean over prompts."""
        return self.values

    @property
    def per_prompt(self) -> Tensor:
        """``(n_prompts, n_edges)``."""
        return self.extras["per_prompt"]

    @property
    def method(self) -> str:
        return str(self.provenance.settings["method"])

    def top(self, k: int | None = None, *, absolute: bool = True, largest: bool = True) -> Ranking:
        """The ``k`` edges of largest ``|score|`` (``Result.top``'s options), as ``(name, score)``.

        Example:
            >>> from tl_interp.circuits import Graph
            >>> g = Graph(n_layers=1, n_heads=1)
            >>> s = EdgeScores(torch.tensor([0.5, -3.0, 1.0, 2.0, 0, 0, 0, 0]), ("edge",), "m", Provenance("m"),
            ...                labels={"edge": g.edges}, extras={"per_prompt": torch.zeros(1, 8)})
            >>> s.top(2).labels, s.top(2).values
            (('input->a0.h0<k>', 'input->m0'), (-3.0, 2.0))
        """
        return Ranking.of(self.values, self.names, check_k(k, "EdgeScores.top", self.values.numel()),
                          absolute=absolute, largest=largest,
                          value_name="score")

    def summary(self, k: int | None = None) -> str:
        """A few lines: method, sizes, the clean and corrupted metric, the top ``k`` edges and how
        many of them survive resampling the prompts (``ti.circuits.stability``).

        Args:
            k: how many edges to list, at most as many as there are; default up to 10 (a printout,
                so the default never exceeds a small graph).
        """
        n = self.values.numel()
        k = min(10, n) if k is None else check_k(k, "EdgeScores.summary", n)
        s = self.provenance.settings
        lines = [f"{self.method} edge scores of {self.metric} on {self.provenance.model_id}: "
                 f"{len(self.names)} edges, {self.per_prompt.shape[0]} prompts, ablation={s.get('ablation')}"
                 + (f", steps={s['steps']}" if "steps" in s else ""),
                 f"metric clean {float(self.extras['clean'].mean()):.4g}"
                 + (f", corrupted {float(self.extras['corrupted'].mean()):.4g}"
                    if bool(torch.isfinite(self.extras["corrupted"]).all()) else "")]
        lines += [f"  {name:<24} {score:+.4g}" for name, score in self.top(k)]
        if self.per_prompt.shape[0] >= 2 and k > 0:  # a ranking without an error bar: say how stable it is
            from tl_interp.circuits._stability import resampled_scores, top_k_survival
            from tl_interp.stats import percentile_interval

            # stability(self, k=k, n_boot=200)'s survival, without its per-edge intervals (a printout stays quick)
            survival = top_k_survival(self.per_prompt.detach().double().cpu().mean(0),
                                      resampled_scores(self.per_prompt, n_boot=200, seed=0), [k])
            lo, hi = (float(v[0]) for v in percentile_interval(survival, 0.05, dim=1))
            lines.append(f"top-{k} survival over 200 resamples of the prompts: {float(survival.mean()):.2f} "
                         f"[95% CI {lo:.2f}, {hi:.2f}] (mean fraction of these {k} still in the top {k}; "
                         "ti.circuits.stability for more)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        top = ", ".join(f"{short(n, 32)} {v:+.3g}" for n, v in self.top(min(3, self.values.numel())))
        return bounded(f"EdgeScores({self.method}, {self.metric}; {len(self.names)} edges, {self.per_prompt.shape[0]} "
                       f"prompts; top: {top}; {self.provenance_line()})")


@checked
def attribute(model: Any, clean: Inputs, corrupted: Inputs, metric: Callable[..., Any], *,
              method: Method = "eap-ig-inputs", steps: int = 5, ablation: Ablation = "corrupted",
              per_position: bool = False, memory_mb: float = 1024.0,
              executor: Executor | None = None, progress: bool = True) -> EdgeScores:
    """Score every edge of ``model``'s graph by its effect on ``metric`` (see the module docstring).

    Args:
        model: a pre-norm HookedTransformer (``ti.circuits.graph`` says which).
        clean, corrupted: prompts; padded rows must be padded alike (any lengths across rows).
            With ``ablation="mean"`` the corrupted prompts are only averaged over.
        metric: a ``ti.metrics`` metric (per prompt), differentiable for the gradient methods.
        method: ``"eap"``, ``"eap-ig-inputs"``, ``"eap-ig-activations"`` or ``"exact"``.
        steps: integration points of the EAP-IG methods.
        ablation: what an ablated edge carries: ``"corrupted"`` (its value on the corrupted
            prompt), ``"mean"`` (over the corrupted prompts) or ``"zero"``.
        per_position: ``False``: one score per edge, summed over positions; ``True`` (MIB's
            "position-aware" graph): one per edge and position ``p`` (``a0.h1_3->a1.h0_3<k>``: the sender's output at ``p`` in the
            receiver's input at ``p``, as the reference's positional graph names it), for
            prompts of one token length (a padded batch is refused: position ``p`` must be the
            same slot in every prompt).
        memory_mb: budget of one stacked pass (EAP-IG, exact).
        executor: where ``"exact"``'s cells run (``None``: here). The gradient methods keep the
            autograd graph through their passes, which can't leave this process: another
            executor is refused for them before any pass.
        progress: show a progress bar.

    Returns:
        ``EdgeScores``.

    Example:
        >>> import torch, tl_interp as ti
        >>> from transformer_lens import HookedTransformer, HookedTransformerConfig
        >>> cfg = HookedTransformerConfig(n_layers=2, d_model=16, n_heads=2, d_head=8, n_ctx=8,
        ...                               d_vocab=10, act_fn="relu", d_mlp=32, seed=0)
        >>> model = HookedTransformer(cfg)
        >>> clean, corrupt = torch.tensor([[1, 2, 3, 4]]), torch.tensor([[1, 2, 5, 4]])
        >>> s = ti.circuits.attribute(model, clean, corrupt, ti.metrics.logit_diff(3, 5), method="eap", progress=False)
        >>> s.scores.shape, s.names[0]
        (torch.Size([46]), 'input->a0.h0<q>')
    """
    if method not in METHODS:
        raise OptionError(f"method must be one of {METHODS}, not {method!r}")
    if isinstance(steps, bool) or steps < 1:
        raise OptionError(f"steps must be at least 1, got {steps}")
    if method == "eap-ig-inputs" and ablation != "corrupted":
        raise OptionError(f"method='eap-ig-inputs' integrates from the corrupted prompts' embeddings, so it takes "
                          f"ablation='corrupted' only (got {ablation!r}); use 'eap-ig-activations' or 'eap'")
    if not isinstance(per_position, bool):
        raise OptionError(f"per_position must be True or False, not {per_position!r}")
    if method != "exact" and executor is not None and not isinstance(executor, LocalExecutor):
        raise UnsupportedError(f"attribute(method={method!r}): {type(executor).__name__} can't run gradient methods: "
                               "their passes keep the autograd graph, which can't cross process boundaries; run them "
                               "here (executor=None), or use method='exact' with this executor")
    g, clean_b, corrupt_b = prepare(model, clean, corrupted, metric, ablation, differentiable=method != "exact")
    aware = per_position
    if aware and clean_b.padded:
        raise InputError("per_position=True scores an edge per position, so every prompt must have the same token "
                         "length (position p must be the same slot in every prompt); this batch is padded "
                         f"(real lengths {clean_b.attention_mask.sum(1).tolist()}). Score prompts of one length "
                         "together (one call per length), or per_position=False")
    named = g.at_positions(clean_b.shape[1]) if aware else g
    settings: dict[str, Any] = {"method": method, "ablation": ablation, "graph": named.spec()}
    if method.startswith("eap-ig"):
        settings["steps"] = steps
    if method == "exact":  # the senders read in the engine's base run where it can (exact_study)
        per_prompt, stats, (clean_value, corrupt_value) = exact_study(model, g, clean_b, corrupt_b, metric, ablation,
                                                                      memory_mb, executor, progress, aware)
        settings.update(stats)
    else:
        clean_s, clean_logits = sender_values(model, g, clean_b)
        corrupt_s, corrupt_logits = sender_values(model, g, corrupt_b) if ablation == "corrupted" else (None, None)
        other = ablated_values(model, g, ablation, clean_b, corrupt_b, clean_s, corrupt_s)
        clean_value, corrupt_value = run_values(model, metric, ablation, clean_b, corrupt_b, clean_logits,
                                                corrupt_logits)
        diff = sender_deltas(g, compat.attention_output_norms(model), clean_s, other)
        # gradients at every per-head input; per-head results only where EAP-IG-activations patches them
        with compat.receiver_hooks(model, split_qkv=True, mlp_in=True, ungroup=True,
                                   attn_result=method == "eap-ig-activations"), \
                (no_head_results(model) if method != "eap-ig-activations" else contextlib.nullcontext()):
            grads = _gradients(model, g, clean_b, metric, method, steps, clean_s, other, memory_mb, progress)
        per_prompt = edge_products(g, diff, grads, aware=aware).flatten(1)
    provenance = Provenance.make(adapt(model).model_id, interventions=[f"{method} edge attribution ({ablation})"],
                                 prompt_hash=prompt_hash(clean_b.tokens, corrupt_b.tokens), settings=settings)
    per_prompt = per_prompt.float().cpu()
    return EdgeScores(values=per_prompt.mean(0), axes=("edge",), metric=str(getattr(metric, "name", "metric")),
                      provenance=provenance, labels={"edge": named.edges},
                      extras={"per_prompt": per_prompt, "clean": clean_value.cpu(), "corrupted": corrupt_value.cpu()})


def edge_products(g: Graph, diff: Tensor, grads: dict[str, Tensor], *, aware: bool = False) -> Tensor:
    """``(batch, n_edges)``: ``D_s . g_r`` summed over positions and ``d_model`` for every edge,
    from the senders' differences ``(batch, pos, n_senders, d_model)`` and the gradients at
    each receiver input hook; ``(batch, n_edges, pos)`` with ``aware`` (not summed over positions)."""
    p = "p" if aware else ""
    out = torch.zeros(diff.shape[0], len(g.edges), *((diff.shape[1],) if aware else ()), dtype=torch.float32,
                      device=diff.device)
    for r in g.receivers:
        if r.head is not None and r.head > 0:
            continue  # a q/k/v hook point is scored once, for all its heads
        grad = grads[r.hook_name].to(diff.dtype)
        n = r.n_senders
        if r.head is None:
            out[:, r.offset:r.offset + n] = torch.einsum(f"bpsd,bpd->bs{p}", diff[:, :, :n], grad).float()
        else:  # heads 0..H-1 of one input: consecutive receivers with the same senders
            block = torch.einsum(f"bpsd,bphd->bhs{p}", diff[:, :, :n], grad).float()
            out[:, r.offset:r.offset + g.n_heads * n] = block.reshape(diff.shape[0], -1, *block.shape[3:])
    return out


def _receiver_names(g: Graph) -> list[str]:
    return list(dict.fromkeys(r.hook_name for r in g.receivers))


def _leaves(model: Any, g: Graph, rows: int, pos: int) -> dict[str, Tensor]:
    """A zero tensor per receiver input hook, added to the input so its gradient is the
    metric's gradient there (summed over every cell that adds it)."""
    cfg = model.cfg
    out = {}
    for name in _receiver_names(g):
        shape = (rows, pos, cfg.n_heads, cfg.d_model) if "_input" in name else (rows, pos, cfg.d_model)
        out[name] = torch.zeros(shape, dtype=cfg.dtype, device=cfg.device, requires_grad=True)
    return out


def _read_gradients(leaves: dict[str, Tensor]) -> Intervention:
    def make(leaf: Tensor):
        def _read_gradient(act: Tensor, hook: Any) -> Tensor:
            return act + leaf

        return _read_gradient

    return sum((Intervention.single(n, make(t), "read the metric's gradient") for n, t in leaves.items()),
               Intervention.identity())


def _gradients(model: Any, g: Graph, batch: Any, metric: Any, method: str, steps: int, clean_s: Tensor,
               other: Tensor, memory_mb: float, progress: bool) -> dict[str, Tensor]:
    """The mean gradient of the summed per-prompt metric at every receiver input, over the
    method's runs (one clean run for EAP)."""
    rows, pos = batch.shape
    leaves = _leaves(model, g, rows, pos)
    read = _read_gradients(leaves)
    if method == "eap":
        with torch.enable_grad():
            logits = read.run(model, batch.tokens, **forward_kw(batch))
            total = bind(metric, batch).per_prompt(logits).sum()
            grads = torch.autograd.grad(total, list(leaves.values()), allow_unused=True)
        return {n: (g_ if g_ is not None else torch.zeros_like(t)) for (n, t), g_ in zip(leaves.items(), grads)}
    cells: list[Intervention] = []
    if method == "eap-ig-inputs":
        clean_in, corrupt_in = clean_s[:, :, 0], other[:, :, 0]
        for k in range(steps):
            point = corrupt_in + (k / steps) * (clean_in - corrupt_in)
            cells.append(hooks.patch("hook_embed", point) + read)
    else:
        at = 0
        for name, n in sender_hooks(g):
            for k in range(1, steps + 1):
                alpha = k / steps
                value = alpha * clean_s[:, :, at:at + n] + (1 - alpha) * other[:, :, at:at + n]
                value = value.reshape(rows, pos, n, -1) if n > 1 else value[:, :, 0]
                cells.append(hooks.patch(name, value) + read)
            at += n
    # activations: every run must compute every layer (upstream receivers get gradients too), so
    # no pass may start mid-stack
    options = EngineOptions(memory_mb=memory_mb, grad=True, fast_paths=method == "eap-ig-inputs")
    base = BaseRun(model, batch, metric, (), options)
    with tqdm(total=len(cells), desc=method, disable=not progress) as bar:
        values = base.evaluate(cells, bar.update)
    grads = torch.autograd.grad(values.sum(), list(leaves.values()), allow_unused=True)
    return {n: (g_ / len(cells) if g_ is not None else torch.zeros_like(t))
            for (n, t), g_ in zip(leaves.items(), grads)}
