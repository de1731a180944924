"""Path patching: a sender's effect on the metric only through given receivers' inputs.

As in the IOI circuit paper (Wang et al. 2022, appendix B): the sender's output is taken from
the source run, every other component is frozen at the base run, and only the receivers' inputs
see the change -- each head's query, key or value input separately, an MLP's input, or the
residual stream into the logits. A receiver recomputes its norm from its new input, and
everything downstream of the receivers runs as usual. With everything else frozen, a
receiver's input in the paper's first pass is the base run's residual stream plus the
senders' change of output (``delta = sender(source) - sender(base)``, for the senders that
write before the receiver reads), so each cell is one ``hooks.path_input`` edit per receiver
input, and the engine runs many senders per stacked pass, starting at the first receiver's
layer (``mid_stack``) and position (``prefix_kv``).

The direction follows ``ti.patching.sweep``: ``"noise"`` (the paper's: senders take the
corrupted run's output, the clean run is frozen) or ``"denoise"`` (senders take the clean
run's output into the frozen corrupted run -- TransformerLens's ``get_act_patch_direct_path``,
which linearises the receiver's norm at the corrupted run's scale: ``norm="frozen"`` gives
that linearisation, the default ``"recompute"`` the exact path).
"""

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from tl_interp import hooks
from tl_interp._checks import checked
from tl_interp import compat
from tl_interp.engine.executors import Executor, Plan, execute
from tl_interp.engine.inputs import Inputs, paired_batches
from tl_interp.engine.run import EngineOptions, check_metric
from tl_interp.errors import InputError, OptionError, UnsupportedError
from tl_interp.intervention import Intervention
from tl_interp.metrics import bind, is_metric
from tl_interp.models._adapter import adapt
from tl_interp.patching._path_specs import Node, group_label, parse_receivers, parse_senders, reaches
from tl_interp.patching._result import PatchingResult
from tl_interp.patching._sweep import metric_name
from tl_interp.results import Provenance, prompt_hash
from tl_interp.sites import site as site_name

__all__ = ["paths"]

Direction = Literal["denoise", "noise"]
Norm = Literal["recompute", "frozen"]
_FROZEN_NORMS = ("LN", "LNPre", "RMS", "RMSPre", None)


def _input_hook(node: Node, n_layers: int, norm: str = "recompute") -> str:
    """The hook a receiver's edit is made at: its input, or its q/k/v with a frozen norm."""
    if node.kind == "head" and norm == "frozen":
        return f"blocks.{node.layer}.attn.hook_{node.input}"
    if node.kind == "head":
        return f"blocks.{node.layer}.hook_{node.input}_input"
    if node.kind == "mlp":
        return site_name("mlp_in", node.layer)
    return site_name("resid_post", n_layers - 1)


def _base_hook(node: Node, n_layers: int, parallel: bool) -> str:
    """The residual-stream hook equal to ``node``'s input in the base run."""
    if node.kind == "head" or (node.kind == "mlp" and parallel):
        return site_name("resid_pre", node.layer)
    if node.kind == "mlp":
        return site_name("resid_mid", node.layer)
    return site_name("resid_post", n_layers - 1)


def _output_hook(node: Node) -> str:
    return site_name("z", node.layer) if node.kind == "head" else site_name("mlp_out", node.layer)


def _write(node: Node, cache: Any, model: Any) -> Tensor:
    """What a sender writes into the residual stream, without biases: ``z[h] @ W_O[h]`` or the MLP's output."""
    act = cache[_output_hook(node)]
    if node.kind == "mlp":
        return act
    return act[:, :, node.head] @ model.blocks[node.layer].attn.W_O[node.head]


def _refuse_early(model: Any, rows: list[tuple[Node, ...]], cols: list[tuple[Node, ...]], parallel: bool,
                  norm: str) -> None:
    """Every check on senders and receivers that needs no forward pass."""
    if norm == "frozen":
        others = [str(r) for col in cols for r in col if r.kind != "head"]
        if others:
            raise OptionError(f"norm='frozen' (TransformerLens's linearised direct path) patches head inputs only; "
                              f"receivers {others} are not heads: use norm='recompute'")
        cfg = model.cfg
        if getattr(cfg, "use_qk_norm", False) or cfg.normalization_type not in _FROZEN_NORMS:
            raise UnsupportedError(f"norm='frozen' on {cfg.normalization_type!r} norms"
                                   f"{' with q/k norms' if getattr(cfg, 'use_qk_norm', False) else ''}: the frozen "
                                   "linearisation covers LayerNorm and RMSNorm before q/k/v only; use norm='recompute'")
    if any(n.kind == "head" for row in rows for n in row):
        why = compat.linear_writes_reason(model)
        if why is not None:
            raise UnsupportedError(f"head senders on {type(model).__name__}: {why}, so one head's write into the "
                                   "residual stream is not z @ W_O; use MLP senders, or ti.patching.sweep at site 'z'")
    if not any(reaches(s, r, parallel) for row in rows for col in cols for s in row for r in col):
        raise OptionError(f"no sender ({', '.join(group_label(r) for r in rows)}) writes before any receiver "
                          f"({', '.join(group_label(c) for c in cols)}) reads; receivers must sit in later layers than "
                          "their senders (a head in layer L reaches heads from layer L+1 on, the MLP of layer L, "
                          "and 'logits')")


@checked
def paths(model: Any, clean: Inputs, corrupted: Inputs, metric: Callable[..., Any], *, senders: Any, receivers: Any,
          direction: Direction = "noise", norm: Norm = "recompute", attention_mask: Tensor | None = None,
          memory_mb: float = 1024.0, fast_paths: bool = True, skip_unchanged: bool = True,
          executor: Executor | None = None, progress: bool = True) -> PatchingResult:
    """Path patching: each sender's effect on the metric through each receiver set's inputs only.

    Args:
        model: a HookedTransformer (its q/k/v-input, MLP-input and GQA switches are turned on
            for the study and restored afterwards).
        clean, corrupted: inputs of equal token shape; padded rows must be padded alike.
        metric: a ``tl_interp.metrics`` metric (per-prompt values are kept) or any
            ``logits -> scalar`` function, as in ``ti.patching.sweep``.
        senders: the rows: a head ``(layer, head)`` / ``"L3H1"``, an MLP ``("mlp", layer)`` /
            ``"MLP3"``, a set of them (patched together), or a list of these.
        receivers: the columns: a head input ``(layer, head, "q" | "k" | "v" | "qkv")`` /
            ``"L3H1.q"``, an MLP input ``("mlp", layer)`` / ``"MLP3"``, ``"logits"``, a set of
            them (one column), or a list of these.
        direction: ``"noise"`` (senders from the corrupted run, everything else frozen at the
            clean run: the IOI paper) or ``"denoise"`` (clean senders into the corrupted run).
        norm: ``"recompute"`` (a receiver's norm is recomputed from its new input: exact) or
            ``"frozen"`` (its scale stays the base run's, and the change enters the head's
            q/k/v linearly: TransformerLens's ``get_act_patch_direct_path``; head receivers).
        attention_mask: for padded token tensors.
        memory_mb, fast_paths, skip_unchanged, executor, progress: as in ``ti.patching.sweep``.

    Returns:
        A PatchingResult with ``values`` of shape ``(sender, receivers)`` (NaN where no sender
        of the row writes before any receiver of the column reads), ``extras["base"]`` and
        ``["source"]`` (the two runs' metric), ``normalized``, and for tl_interp metrics
        ``extras["per_prompt"]`` of shape ``(sender, receivers, batch)``.

    Example:
        >>> import torch, tl_interp as ti
        >>> model = ti.models.load("induction-2l")
        >>> clean = torch.tensor([[0, 5, 6, 7, 0, 5, 6]]); corrupt = torch.tensor([[0, 5, 6, 7, 0, 9, 6]])
        >>> res = ti.patching.paths(model, clean, corrupt, ti.metrics.logit_diff(7, 9), progress=False,
        ...                         senders=[(0, h) for h in range(3)], receivers=[(1, 0, "k"), "logits"])
        >>> res.values.shape, res.labels["receivers"]
        (torch.Size([3, 2]), ('L1H0.k', 'logits'))
    """
    if not compat.is_hooked_transformer(model):
        compat.require_hooked("path patching (its per-head q/k/v input hooks)")  # TL 4 has none: say so
        raise UnsupportedError(f"path patching needs a HookedTransformer (its per-head q/k/v input hooks); got "
                               f"{type(model).__name__}. Load the model as a HookedTransformer")
    if direction not in ("denoise", "noise"):
        raise OptionError(f"direction must be 'denoise' or 'noise', not {direction!r}")
    cfg = model.cfg
    parallel = bool(getattr(cfg, "parallel_attn_mlp", False))
    rows, cols = parse_senders(senders, cfg), parse_receivers(receivers, cfg)
    if norm not in ("recompute", "frozen"):
        raise OptionError(f"norm must be 'recompute' or 'frozen', not {norm!r}")
    _refuse_early(model, rows, cols, parallel, norm)
    clean_b, corrupt_b = paired_batches(model, clean, corrupted, attention_mask)
    check_metric(model, metric, clean_b)
    base_b, source_b = (corrupt_b, clean_b) if direction == "denoise" else (clean_b, corrupt_b)
    options = EngineOptions(memory_mb=memory_mb, fast_paths=fast_paths, skip_unchanged=skip_unchanged)
    every = sorted({r for col in cols for r in col})
    n_layers = cfg.n_layers
    switches = dict(split_qkv=norm == "recompute" and any(r.kind == "head" for r in every),
                    mlp_in=any(r.kind == "mlp" for r in every),
                    ungroup=any(r.kind == "head" and r.input in "kv" for r in every))
    with compat.receiver_hooks(model, **switches):
        outputs = sorted({_output_hook(s) for row in rows for s in row})
        bases = sorted({_base_hook(r, n_layers, parallel) for r in every})
        if norm == "frozen" and cfg.normalization_type is not None:
            bases += sorted({f"blocks.{r.layer}.ln1.hook_scale" for r in every})
        kw_base = {"attention_mask": base_b.attention_mask} if base_b.padded else {}
        kw_source = {"attention_mask": source_b.attention_mask} if source_b.padded else {}
        with torch.no_grad():
            base_cache = hooks.cache(list(dict.fromkeys(outputs + bases)))
            base_cache.run(model, base_b.tokens, **kw_base)
            source_cache = hooks.cache(outputs)
            source_logits = source_cache.run(model, source_b.tokens, **kw_source)
            deltas = {s: _write(s, source_cache, model) - _write(s, base_cache, model)
                      for s in sorted({s for row in rows for s in row})}
        edit = _frozen_edit(model, base_cache) if norm == "frozen" else _input_edit(base_cache, n_layers, parallel)
        cells, keys, where = _cells(rows, cols, deltas, edit, n_layers, parallel, norm)
        names = tuple(sorted({_input_hook(r, n_layers, norm) for r in every}))
        work = Plan(model, base_b, metric, tuple(cells), tuple(keys), names, options, label="path patching",
                    signature={"study": "paths", "direction": direction, "norm": norm,
                               "senders": [group_label(r) for r in rows],
                               "receivers": [group_label(c) for c in cols], "source": prompt_hash(source_b.tokens)})
        outcome = execute(work, executor, progress=progress)
    return _result(model, metric, outcome, where, rows, cols, source_logits, source_b, base_b, direction,
                   {**switches, "norm": norm})


Edit = Callable[[str, Tensor, list[Node]], Intervention]


def _input_edit(base_cache: Any, n_layers: int, parallel: bool) -> Edit:
    """The exact receiver edit: the input hook set to the base input plus the senders' change."""
    def edit(name: str, delta: Tensor, members: list[Node]) -> Intervention:
        heads = sorted({r.head for r in members}) if members[0].kind == "head" else None
        return hooks.path_input(name, delta, heads=heads, base=base_cache[_base_hook(members[0], n_layers, parallel)])
    return edit


def _frozen_edit(model: Any, base_cache: Any) -> Edit:
    """TransformerLens's linearised receiver edit: the change through ``ln1`` at the base run's
    scale, projected by each receiving head's W_Q / W_K / W_V onto its q / k / v."""
    cfg = model.cfg

    def edit(name: str, delta: Tensor, members: list[Node]) -> Intervention:
        layer = members[0].layer
        ln1 = model.blocks[layer].ln1
        if cfg.normalization_type in ("LN", "LNPre"):
            delta = delta - delta.mean(-1, keepdim=True)
        if cfg.normalization_type is not None:
            delta = delta / base_cache[f"blocks.{layer}.ln1.hook_scale"]
        if cfg.normalization_type in ("LN", "RMS"):
            delta = delta * ln1.w
        attn = model.blocks[layer].attn
        weights = {"q": attn.W_Q, "k": attn.W_K, "v": attn.W_V}
        return sum((hooks.path_projection(name, delta, weight=weights[r.input][r.head].detach(), head=r.head)
                    for r in members), Intervention.identity())
    return edit


def _cells(rows: list[tuple[Node, ...]], cols: list[tuple[Node, ...]], deltas: dict[Node, Tensor], edit: Any,
           n_layers: int, parallel: bool,
           norm: str) -> tuple[list[Intervention], list[tuple[str, str]], list[tuple[int, int]]]:
    """One intervention per (sender row, receiver column) with a path: a ``path_input`` edit per
    receiver input hook (the heads reading one hook share the senders that reach them)."""
    cells, keys, where = [], [], []
    summed: dict[tuple[Node, ...], Tensor] = {}
    for i, row in enumerate(rows):
        for j, col in enumerate(cols):
            by_hook: dict[tuple[str, tuple[Node, ...]], list[Node]] = {}
            for r in col:
                reaching = tuple(s for s in row if reaches(s, r, parallel))
                if reaching:
                    by_hook.setdefault((_input_hook(r, n_layers, norm), reaching), []).append(r)
            if not by_hook:
                continue  # no path: NaN in the result
            edits = []
            for (name, reaching), members in by_hook.items():
                if reaching not in summed:
                    summed[reaching] = torch.stack([deltas[s] for s in reaching]).sum(0)
                edits.append(edit(name, summed[reaching], members))
            cells.append(sum(edits, Intervention.identity()))
            keys.append((group_label(row), group_label(col)))
            where.append((i, j))
    return cells, keys, where


def _result(model: Any, metric: Any, outcome: Any, where: list[tuple[int, int]], rows: list[tuple[Node, ...]],
            cols: list[tuple[Node, ...]], source_logits: Tensor, source_b: Any, base_b: Any, direction: str,
            switches: dict[str, bool]) -> PatchingResult:
    values, base = outcome.values, outcome.base
    if isinstance(values, dict):
        raise InputError("path patching takes one metric, not a MetricSet")
    bound = bind(metric, source_b)
    extras: dict[str, Tensor] = {}
    index = torch.tensor([i * len(cols) + j for i, j in where], dtype=torch.long)
    if is_metric(metric):
        batch = base_b.shape[0]
        per_prompt = torch.full((len(rows) * len(cols), batch), float("nan"))
        per_prompt[index] = values.detach().float().cpu()
        source = bound.per_prompt(source_logits).detach().float().cpu()
        extras.update(base_per_prompt=base.detach().float().cpu(), source_per_prompt=source,
                      per_prompt=per_prompt.reshape(len(rows), len(cols), batch))
        grid, base_value, source_value = per_prompt.mean(-1), base.float().mean(-1), source.mean(-1)
    else:
        grid = torch.full((len(rows) * len(cols),), float("nan"))
        grid[index] = values.detach().float().cpu()
        base_value, source_value = base.float(), bound(source_logits).float()
    extras = {"base": base_value.detach().cpu(), "source": source_value.detach().cpu(), **extras}
    arrow = "corrupted -> clean" if direction == "noise" else "clean -> corrupted"
    provenance = Provenance.make(
        adapt(model).model_id, interventions=[f"path patching {arrow}: sender outputs into receiver inputs only"],
        prompt_hash=prompt_hash(source_b.tokens, base_b.tokens),
        settings={"direction": direction, "senders": [group_label(r) for r in rows],
                  "receivers": [group_label(c) for c in cols], "switches": switches, "engine": outcome.paths,
                  **outcome.stats})
    labels = {"sender": tuple(group_label(r) for r in rows), "receivers": tuple(group_label(c) for c in cols)}
    return PatchingResult(values=grid.reshape(len(rows), len(cols)), axes=("sender", "receivers"),
                          metric=metric_name(metric), provenance=provenance, labels=labels, extras=extras)
