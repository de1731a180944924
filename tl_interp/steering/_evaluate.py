"""The steering evaluation battery: tasks x vectors x scales, with controls and intervals.

A task is a list of ``(prompt, expected answer)`` pairs, the answer being the single next
token the steered model should produce (for a numbers-minus-months vector on
``"january , february , march ,"`` that is ``"four"``). Each prompt is scored under every
(vector, scale) by

- accuracy: the steered top-1 token is the expected answer;
- answer probability: softmax probability of the expected answer;
- logit difference: logit of the expected answer minus logit of the *unsteered* top-1
  token (what the model said before steering);
- changed: the top-1 token differs from the unsteered one;
- on target: the top-1 token is one of the target tokens (default: every expected answer
  of every task), which is what the unrelated-prompt control reads;
- target accuracy: among the target tokens only, the expected answer has the highest
  logit (did the vector pick the right member of the answer class? chance is one over
  the number of targets).

Controls a user gets without asking (``Controls``): the unsteered model (a baseline row),
random vectors of the same norm at the same site (several seeds; their per-prompt mean is a
row ``random ~ <vector>``), unrelated prompts (a column scored by "changed" and "on
target": does the vector write its answer whatever the prompt?), and held-out prompts:
prompts a vector was built from are scored in a separate ``<task> (seen)`` column, so the
task columns only ever hold prompts no vector saw. Means come with percentile bootstrap
intervals over prompts; ``SteeringReport.compare`` gives paired intervals of a vector's
effect against its random control.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tl_interp._checks import checked, renamed, reordered
from tl_interp._tokens import single_token
from tl_interp import metrics
from tl_interp.engine.executors import Executor
from tl_interp.engine.inputs import as_batch
from tl_interp.engine.run import EngineOptions, Staged
from tl_interp.errors import InputError, OptionError
from tl_interp.models._adapter import adapt
from tl_interp.positions import Positions
from tl_interp.steering._apply import Variant, check_vectors, run_variants
from tl_interp.steering._report import SteeringReport
from tl_interp.steering._vector import SteeringVector, rule_label
from tl_interp.results import Provenance, prompt_hash
from tl_interp.stats import bootstrap_mean_ci

__all__ = ["evaluate", "Controls", "answer_token"]

METRICS = ("accuracy", "target_accuracy", "prob", "logit_diff", "changed", "on_target")
ANSWERED = ("accuracy", "target_accuracy", "prob", "logit_diff")  # need an expected answer; NaN on unrelated prompts
DEFAULT_UNRELATED = ("a a a a", "the the the the", "and and and and", "is is is is", "x y z w")


@dataclass(frozen=True)
class Controls:
    """Which controls ``evaluate`` adds (all of them by default).

    Attributes:
        random_seeds: one random vector of the same norm and site per seed and per vector;
            empty to skip.
        unrelated_prompts: prompts with no expected answer, scored by "changed" and "on
            target"; empty to skip.
        split_seen: score prompts a vector was built from in separate ``(seen)`` columns.
    """

    random_seeds: Sequence[int] = (0, 1, 2, 3, 4)
    unrelated_prompts: Sequence[str] = DEFAULT_UNRELATED
    split_seen: bool = True


@reordered(("model", "answer", "context"), lambda args: len(args) == 3)
@checked
def answer_token(model: Any, answer: str, *, context: str = "") -> int:
    """The single token id of ``answer``; a clear error if it is several tokens (or none).

    Example:
        >>> from tl_interp.models import load
        >>> answer_token(load("ordinal-4l"), "four") == load("ordinal-4l").to_single_token("four")
        True
    """
    return single_token(model, answer, f"evaluate{context}: the answer")


def _check_tasks(model: Any, tasks: Mapping[str, Sequence[tuple[str, str]]]) -> dict[str, list[tuple[str, int, str]]]:
    if not tasks:
        raise InputError("evaluate: no tasks given; pass {task name: [(prompt, expected answer), ...]}")
    out: dict[str, list[tuple[str, int, str]]] = {}
    for name, pairs in tasks.items():
        if not pairs:
            raise InputError(f"evaluate: task {name!r} has no prompts")
        rows = []
        for i, pair in enumerate(pairs):
            if not (isinstance(pair, tuple | list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
                raise InputError(f"evaluate: task {name!r} item {i} must be a (prompt, answer) pair of strings, "
                                 f"got {pair!r}")
            prompt, answer = pair
            rows.append((prompt, answer_token(model, answer, context=f" (task {name!r}, prompt {prompt!r})"), answer))
        out[name] = rows
    return out


def _vectors(vectors: Sequence[SteeringVector] | SteeringVector) -> list[SteeringVector]:
    vs = [vectors] if isinstance(vectors, SteeringVector) else list(vectors)
    names = [v.name for v in vs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"evaluate: vector names must be unique (they label the table); repeated: {dup}. "
                         "Use vector.renamed(...)")
    return vs


def _old_order(args: tuple[Any, ...]) -> bool:
    """``evaluate(model, vectors, tasks, scales)``: the tasks (a mapping) came third."""
    return len(args) >= 3 and not isinstance(args[1], Mapping) and isinstance(args[2], Mapping)


@reordered(("model", "vectors", "tasks"), _old_order)
@renamed(multipliers="scales")
@checked
def evaluate(model: Any, tasks: Mapping[str, Sequence[tuple[str, str]]],
             vectors: Sequence[SteeringVector] | SteeringVector, scales: Sequence[float], *,
             controls: Controls = Controls(), positions: Positions = "all",
             target_tokens: Sequence[str] | None = None, n_boot: int = 2000, seed: int = 0,
             memory_mb: float = 1024.0, fast_paths: bool = True, executor: Executor | None = None,
             progress: bool = True) -> SteeringReport:
    """Score every vector at every scale on every task, with controls and intervals.

    Args:
        model: the model (HookedTransformer: stacked passes start at the steered layer).
        tasks: ``{name: [(prompt, expected single-token answer), ...]}`` (the data, so second,
            as ``inputs`` are everywhere; the old order ``(model, vectors, tasks, ...)`` warns).
        vectors: the steering vectors (unique names).
        scales: e.g. ``[0, 2, 4, 8]``; 0 is the unsteered model exactly.
        controls: random-vector seeds, unrelated prompts, seen/held-out split (``Controls``).
        positions: where vectors are added: ``"all"`` real tokens, ``"last"``, ``From(k)``.
        target_tokens: answers counted as "on target" (default: every expected answer).
        n_boot, seed: bootstrap resamples and seed (recorded in provenance).
        memory_mb: budget for one stacked forward pass.
        fast_paths: engine option (results are exact either way).
        executor: where the cells run (default: this process; ``ti.distributed``).
        progress: progress bar.

    Returns:
        A ``SteeringReport``: ``values`` is accuracy over (vector, scale, task), with
        intervals, the other metrics, the unsteered baseline and per-prompt answers.

    Example:
        >>> from tl_interp.models import load
        >>> model = load("ordinal-4l")
        >>> v = SteeringVector(torch.zeros(128), "blocks.2.hook_resid_pre", name="zero")
        >>> rep = evaluate(model, {"numbers": [("one , two ,", "three"), ("two , three ,", "four")]}, v,
        ...                [0.0, 1.0], controls=Controls(random_seeds=(), unrelated_prompts=()), progress=False)
        >>> rep.values.squeeze().tolist()
        [1.0, 1.0]
    """
    vs = _vectors(vectors)
    mults = [float(m) for m in scales]
    if not mults or any(not torch.isfinite(torch.tensor(m)) for m in mults):
        raise InputError(f"evaluate: scales must be a non-empty list of finite numbers, got {mults}")
    if isinstance(n_boot, bool) or n_boot < 1:
        raise OptionError(f"evaluate: n_boot must be at least 1, got {n_boot}")
    check_vectors(model, vs, "evaluate", sorted(mults, key=abs)[-1:])
    checked = _check_tasks(model, tasks)
    if isinstance(controls.unrelated_prompts, str):
        raise InputError("evaluate: Controls.unrelated_prompts is a list of prompts, not one string")
    ad = adapt(model)

    # -- the vectors: the user's, then a random control of each -----------------------------
    seeds = list(controls.random_seeds)
    randoms = [[v.random_like(s) for s in seeds] for v in vs]
    all_vectors = vs + [r for group in randoms for r in group]
    variants = [Variant(v, m) for v in all_vectors for m in mults]

    entries, columns = _entries(checked, vs, controls)
    targets = ([answer_token(model, t, context=" (target_tokens)") for t in target_tokens] if target_tokens is not None
               else sorted({e[2] for e in entries if e[2] >= 0}))
    if not targets:
        raise InputError("evaluate: target_tokens is empty; give the answers that count as on target")
    options = EngineOptions(memory_mb=memory_mb, fast_paths=fast_paths)
    per_prompt, base = _score(model, entries, variants, targets, positions, options, executor, progress)

    # -- aggregate: (vector, scale, task) means with intervals ---------------------------
    n_v, n_m, n_r = len(vs), len(mults), len(seeds)
    shaped = {k: per_prompt[k].view(len(all_vectors), n_m, len(entries)) for k in METRICS}
    rows_pp = {k: (torch.cat([t[:n_v], t[n_v:].view(n_v, n_r, n_m, -1).mean(1)]) if n_r else t)
               for k, t in shaped.items()}
    names = [v.name for v in vs] + ([f"random ~ {v.name}" for v in vs] if n_r else [])
    stats, base_stats = _aggregate(rows_pp, base, entries, columns, n_boot, seed)

    extras: dict[str, Tensor] = {k: v for k, v in stats.items() if k != "accuracy"}
    extras.update(base_stats)
    extras.update({f"pp_{k}": v for k, v in rows_pp.items()})
    extras.update({f"base_pp_{k}": v for k, v in base.items() if k != "top1"})
    if n_r:
        extras.update({f"pp_random_{k}": shaped[k][n_v:].view(n_v, n_r, n_m, -1) for k in METRICS})
    extras["pp_top1"] = per_prompt["top1"].view(len(all_vectors), n_m, -1)[:n_v].long()
    extras["base_pp_top1"] = base["top1"].long()
    ids = sorted({int(t) for t in torch.cat([extras["pp_top1"].flatten(), extras["base_pp_top1"],
                                             torch.tensor(targets or [0])]).tolist()}
                 | {e[2] for e in entries if e[2] >= 0})
    vocab = {i: ad.tokenizer.decode([i]) for i in ids}  # type: ignore[union-attr]
    meta = {
        "vectors": [{"name": v.name, "hook_name": v.hook_name, "space": v.space, "method": v.method, "norm": v.norm,
                     "sae_id": v.sae_id, "prompt_hash": v.prompt_hash, "n_source_prompts": len(v.source_prompts)}
                    for v in vs],
        "scales": mults, "columns": columns, "random_seeds": seeds,
        "prompts": [{"column": c, "prompt": p, "answer_id": a, "answer": s} for c, p, a, s in entries],
        "vocab": {str(k): v for k, v in vocab.items()}, "targets": targets,
    }
    provenance = Provenance.make(
        ad.model_id, interventions=[str(v.intervention(1.0, positions)).splitlines()[-1].strip() for v in vs],
        prompt_hash=prompt_hash([e[1] for e in entries]), seed=seed,
        settings={"positions": rule_label(positions), "n_boot": n_boot, "random_seeds": seeds,
                  "unrelated_prompts": list(controls.unrelated_prompts), "split_seen": controls.split_seen})
    return SteeringReport(values=stats["accuracy"].float(), axes=("vector", "scale", "task"), metric="accuracy",
                          provenance=provenance,
                          labels={"vector": tuple(names), "scale": tuple(f"x{m:g}" for m in mults),
                                  "task": tuple(columns)},
                          extras={k: (v.float() if v.is_floating_point() else v) for k, v in extras.items()},
                          meta=meta)


def _entries(checked: dict[str, list[tuple[str, int, str]]], vectors: list[SteeringVector],
             controls: Controls) -> tuple[list[tuple[str, str, int, str]], list[str]]:
    """``(column, prompt, answer id, answer)`` per prompt and the column order.

    A task's column holds only prompts no vector was built from; the others go to
    ``"<task> (seen)"``; unrelated prompts (answer id -1) to ``"unrelated"``.
    """
    seen = set().union(*(v.source_prompts for v in vectors)) if controls.split_seen else set()
    entries = [(f"{name} (seen)" if prompt in seen else name, prompt, answer_id, answer)
               for name, rows in checked.items() for prompt, answer_id, answer in rows]
    used = {e[0] for e in entries}
    columns = [c for name in checked for c in (name, f"{name} (seen)") if c in used]
    entries += [("unrelated", prompt, -1, "") for prompt in controls.unrelated_prompts]
    if controls.unrelated_prompts:
        columns.append("unrelated")
    return entries, columns


def _aggregate(rows_pp: dict[str, Tensor], base: dict[str, Tensor], entries: list[tuple[str, str, int, str]],
               columns: list[str], n_boot: int, seed: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Per-column means and bootstrap intervals of every metric, steered and unsteered (float64)."""
    col_index = {c: [i for i, e in enumerate(entries) if e[0] == c] for c in columns}
    stats: dict[str, Tensor] = {}
    base_stats: dict[str, Tensor] = {}
    for metric in METRICS:
        steered = rows_pp[metric]
        mean = torch.full((*steered.shape[:2], len(columns)), float("nan"), dtype=torch.float64)
        low, high = mean.clone(), mean.clone()
        b_mean = torch.full((len(columns),), float("nan"), dtype=torch.float64)
        b_low, b_high = b_mean.clone(), b_mean.clone()
        for j, col in enumerate(columns):
            if col == "unrelated" and metric in ANSWERED:
                continue  # no expected answer
            idx = col_index[col]
            vals, b_vals = steered[..., idx].double(), base[metric][idx].double()
            mean[..., j], b_mean[j] = vals.mean(-1), b_vals.mean()
            if len(idx) > 1:
                low[..., j], high[..., j] = bootstrap_mean_ci(vals, n_boot=n_boot, seed=seed)
                b_low[j], b_high[j] = bootstrap_mean_ci(b_vals, n_boot=n_boot, seed=seed)
            else:  # one prompt: no interval to speak of
                low[..., j], high[..., j] = mean[..., j], mean[..., j]
                b_low[j], b_high[j] = b_mean[j], b_mean[j]
        stats[metric], stats[f"{metric}_ci_low"], stats[f"{metric}_ci_high"] = mean, low, high
        base_stats[f"baseline_{metric}"] = b_mean
        base_stats[f"baseline_{metric}_ci_low"], base_stats[f"baseline_{metric}_ci_high"] = b_low, b_high
    return stats, base_stats


def _score(model: Any, entries: list[tuple[str, str, int, str]], variants: list[Variant], targets: list[int],
           positions: Positions, options: EngineOptions, executor: Executor | None,
           progress: bool) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Per-prompt metrics ``(variant, prompt)`` and unsteered ``(prompt,)``, in ``entries`` order.

    Every metric is a ``ti.metrics`` metric read from the same logits; the logit difference
    and "changed" compare against the unsteered top token, which the engine reads from the
    base run before any steered pass (a staged metric).
    """
    batch = as_batch(model, [e[1] for e in entries])
    answers = torch.tensor([e[2] for e in entries], device=batch.tokens.device)
    target_ids = torch.tensor(targets, dtype=torch.long)

    def metric_for(rows: list[int]) -> Staged:
        ans = answers[torch.tensor(rows, device=answers.device)]

        def battery(unsteered_top: Any) -> metrics.MetricSet:
            top = unsteered_top.long()
            return metrics.MetricSet({
                "top1": metrics.top_token(),
                "accuracy": metrics.accuracy(ans),
                "target_accuracy": metrics.best_of(target_ids, ans),
                "prob": metrics.answer_prob(ans),
                "logit_diff": metrics.logit_diff(ans, top),
                "changed": metrics.changed(top),
                "on_target": metrics.in_set(target_ids),
            })

        return Staged(metrics.top_token(), battery)

    steered, base = run_variants(model, batch, [v.cell(positions) for v in variants], metric_for,
                                 options=options, executor=executor,
                                 label="steering battery", progress=progress)
    return steered, base  # type: ignore[return-value]
