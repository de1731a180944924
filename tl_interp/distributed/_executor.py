"""``RayExecutor``: a plan's cells sharded over Ray actors, resumable, equal to the local run.

The cells of a plan (``tl_interp.engine.executors.Plan``) are cut into contiguous shards; each
idle worker takes the next shard, evaluates it on its model replica against the plan's base
run (built once per worker) and sends the values back; the client writes each finished shard
to the store (when given) and assembles the shards in the plan's order. Every cell is the
engine's own computation (``BaseRun.evaluate``), so the values equal ``LocalExecutor``'s up to
the float rounding of stacking cells differently into passes.

Everything that can go wrong before the work is checked before any of it is sent: the plan
must be picklable (cells are closures; cloudpickle sends them by value), the store writable,
the address reachable, the model free of hooks a replica would not have.
"""

import math
import time
import uuid
import warnings
from collections import deque
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from tl_interp._checks import checked
from tl_interp.compat.hook_points import attached_hooks
from tl_interp.distributed import _cluster
from tl_interp.distributed._fingerprint import blake, model_digest
from tl_interp.distributed._store import Shard, ShardStore, shard_addresses
from tl_interp.distributed._worker import dumps
from tl_interp.engine.executors import Outcome, Plan
from tl_interp.engine.run import Values
from tl_interp.errors import ArtifactError, OptionError, TlInterpWarning, UnsupportedError

__all__ = ["RayExecutor"]

_ENGINE_COUNTS = ("passes", "cells_skipped", "final_block_split", "prefix_passes")


def _payload(plan: Plan) -> bytes:
    """The plan without its model, as bytes; a typed error naming the first part that can't be sent."""
    parts = {"batch": plan.batch, "metric": plan.metric, "cells": plan.cells, "sites": plan.sites,
             "options": plan.options}
    try:
        return dumps(parts)
    except Exception as err:  # noqa: BLE001 - find which part, then say so
        culprit = "the plan"
        for label, obj in [("the metric", plan.metric), ("the base batch", plan.batch)] + [
                (f"cell {i} (key {plan.keys[i]}: {cell!r})", cell) for i, cell in enumerate(plan.cells)]:
            try:
                dumps(obj)
            except Exception as inner:  # noqa: BLE001
                culprit, err = label, inner
                break
        raise UnsupportedError(f"RayExecutor: {culprit} can't be sent to Ray workers ({type(err).__name__}: {err}). "
                               "Cells and metrics must be picklable (closures over tensors and plain values are; "
                               "locks, open files and generators are not); rebuild it from picklable parts, or run "
                               "locally (executor=None)") from None


def _check_model(model: Any) -> None:
    """A replica is the model as loaded or pickled: hooks the client attached by hand would be missing."""
    attached = [name for name, hp in getattr(model, "hook_dict", {}).items() if attached_hooks(hp)]
    if attached:
        raise UnsupportedError(f"RayExecutor: the model has hooks attached at {attached[:3]}; workers run replicas "
                               "without them, so results would differ from a local run. Remove them "
                               "(model.reset_hooks()) and express the edit as an Intervention in the study")


def _cat(parts: Sequence[Values]) -> Values:
    if isinstance(parts[0], dict):
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}  # type: ignore[index]
    return torch.cat(parts)  # type: ignore[arg-type]


def _to(values: Values, device: torch.device) -> Values:
    if isinstance(values, dict):
        return {k: v.to(device) for k, v in values.items()}
    return values.to(device)


def _rows(values: Values) -> int:
    return int(next(iter(values.values())).shape[0]) if isinstance(values, dict) else int(values.shape[0])


class RayExecutor:
    """Runs a plan's cells on Ray workers, shard by shard, and returns what a local run returns.

    Pass it as ``executor=`` to ``ti.patching.sweep``, ``ti.ablation.scan``,
    ``ti.steering.evaluate`` or any study on the engine. A model that came from
    ``ti.models.load(name)`` is loaded by name on each worker (and checked, weight for weight,
    against the client's); any other model is sent once through Ray's object store.

    Args:
        address: ``None`` (the Ray instance this process joined, else a new local instance on
            127.0.0.1), ``"auto"`` (the cluster started on this machine with ``ray start``),
            ``"host:port"`` (a head node started with ``ray start --head``) or
            ``"ray://host:10001"`` (Ray Client).
        num_workers: worker actors (default: one per CPU of the cluster, or per GPU).
        store: a directory for finished shards (local or shared filesystem): a rerun with the
            same store computes only the shards not yet there.
        shard_size: cells per shard (default: a 32nd of the plan, so the shards, and the
            store's addresses, do not depend on the cluster's size).
        cpus_per_worker: CPUs each actor reserves (its torch threads).
        gpus_per_worker: GPUs each actor reserves; default 1 when the client's model is on a
            GPU (one replica per GPU), else 0.
        max_restarts, max_task_retries: Ray's retries of a worker that died and of its tasks.
        connect_timeout: seconds to wait for the address to answer.
        start_timeout: seconds to wait for the workers to start and hold the model (their
            processes import torch and load or unpickle it: seconds on an idle machine, minutes
            on a loaded one). When it expires the error says what each worker was doing (not
            scheduled, starting, loading the model) and blames resources only if Ray lacks them.

    Raises:
        UnsupportedError: Ray is not installed.
        OptionError: nothing answers at ``address`` within ``connect_timeout``.
        ArtifactError: ``store`` can't be written.

    A stored shard that is corrupt, truncated or another shard's (swapped in) is never used:
    ``run`` warns, naming the file, computes that shard again and replaces the file.

    Example:
        >>> import tl_interp as ti
        >>> ti.distributed.RayExecutor(store="/proc/no-store")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        tl_interp.errors.ArtifactError: the shard store '/proc/no-store' can't be written ...
    """

    @checked
    def __init__(self, address: str | None = None, num_workers: int | None = None, store: str | None = None, *,
                 shard_size: int | None = None, cpus_per_worker: float = 1.0, gpus_per_worker: float | None = None,
                 max_restarts: int = 3, max_task_retries: int = 3, connect_timeout: float = 5.0,
                 start_timeout: float = 600.0) -> None:
        for label, value in (("num_workers", num_workers), ("shard_size", shard_size)):
            if value is not None and value < 1:
                raise OptionError(f"RayExecutor: {label} must be at least 1 (or None), got {value}")
        positive = {"cpus_per_worker": cpus_per_worker, "connect_timeout": connect_timeout,
                    "start_timeout": start_timeout}
        for label, number in positive.items():
            if not number > 0 or math.isinf(number) and label != "start_timeout":
                raise OptionError(f"RayExecutor: {label} must be a positive number of "
                                  f"{'CPUs' if label.startswith('cpus') else 'seconds'}, got {number}")
        if gpus_per_worker is not None and not gpus_per_worker >= 0:
            raise OptionError(f"RayExecutor: gpus_per_worker must be at least 0 (or None), got {gpus_per_worker}")
        self.store = ShardStore(store) if store is not None else None  # checked before anything connects
        self.address, self.num_workers, self.shard_size = address, num_workers, shard_size
        self.cpus, self.gpus = cpus_per_worker, gpus_per_worker
        self.restarts, self.retries, self.timeout = max_restarts, max_task_retries, connect_timeout
        self.start_timeout = start_timeout
        self._ray = _cluster.connect(address, connect_timeout)

    def ranges(self, n: int) -> list[tuple[int, int]]:
        """The shards of ``n`` cells as ``(lo, hi)`` index ranges."""
        size = self.shard_size or max(1, math.ceil(n / 32))
        return [(lo, min(lo + size, n)) for lo in range(0, n, size)] or [(0, 0)]

    def start(self, model_on_gpu: bool = False) -> None:
        """Start the workers now, without waiting for them (else they start on the first run)."""
        self._pool(model_on_gpu)

    def worker_pids(self, model_on_gpu: bool = False) -> list[int]:
        """The process id of each worker (for inspecting, or killing one to test recovery)."""
        return self._pool(model_on_gpu).pids()

    def _pool(self, model_on_gpu: bool) -> _cluster.Pool:
        gpus = self.gpus if self.gpus is not None else (1.0 if model_on_gpu else 0.0)
        return _cluster.pool(self.num_workers, self.cpus, gpus, self.restarts, self.retries)

    def run(self, plan: Plan, *, progress: bool = True) -> Outcome:
        """Run ``plan``'s cells on the workers (or read them from the store).

        Returns:
            An ``Outcome`` equal to ``LocalExecutor().run(plan)``'s, with ``stats`` saying how
            it ran: ``executor="ray"``, ``workers``, ``shards``, ``shards_computed``,
            ``shards_reused``, ``shards_rejected`` (stored files found damaged or misplaced, and
            recomputed), ``shard_overhead_ms`` (per shard: the round trip less the
            worker's own time), ``base_runs`` and the engine's counts.
        """
        if plan.options.grad:
            raise UnsupportedError("RayExecutor: this plan keeps the autograd graph (integrated gradients), which "
                                   "can't cross process boundaries; run it locally (executor=None)")
        _check_model(plan.model)
        payload = _payload(plan)
        if self.store is not None:
            self.store.check()
        digest = model_digest(plan.model)
        ranges = self.ranges(len(plan.cells))
        addresses = shard_addresses(plan, digest, ranges) if self.store is not None else None
        shards: dict[int, Shard] = {}
        rejected = 0
        if addresses is not None:
            for i, address in enumerate(addresses):
                found = self._stored(address, ranges[i])
                rejected += found is False
                if isinstance(found, Shard):
                    shards[i] = found
        reused = len(shards)
        todo = [i for i in range(len(ranges)) if i not in shards]
        info: dict[str, Any] = {"workers": 0, "base_runs": 0, "shard_overhead_ms": 0.0, "worker_compute_s": 0.0,
                                "model_transfer": "none", **{k: 0 for k in _ENGINE_COUNTS}}
        with tqdm(total=len(plan.cells), desc=plan.label, disable=not progress) as bar:
            bar.update(sum(ranges[i][1] - ranges[i][0] for i in shards))
            if todo:
                self._compute(plan, digest, payload, ranges, todo, addresses, shards, info, bar)
        ordered = [shards[i] for i in range(len(ranges))]
        for (lo, hi), shard in zip(ranges, ordered):
            if (shard.lo, shard.hi) != (lo, hi) or _rows(shard.values) != hi - lo:
                raise RuntimeError(f"RayExecutor: shard {lo}..{hi} came back with {_rows(shard.values)} cells")
        device = plan.batch.tokens.device
        stats = {**{k: info[k] for k in _ENGINE_COUNTS}, "executor": "ray", "workers": info["workers"],
                 "shards": len(ranges), "shard_size": ranges[0][1] - ranges[0][0], "shards_computed": len(todo),
                 "shards_reused": reused, "shards_rejected": rejected, "base_runs": info["base_runs"],
                 "shard_overhead_ms": info["shard_overhead_ms"], "worker_compute_s": info["worker_compute_s"],
                 "model_transfer": info["model_transfer"]}
        return Outcome(_to(_cat([s.values for s in ordered]), device), _to(ordered[0].base, device),
                       dict(ordered[0].paths), stats)

    def _stored(self, address: str, cells: tuple[int, int]) -> Shard | bool | None:
        """The stored shard at ``address`` if it is intact and holds ``cells``; None if none is
        stored; False (after a warning naming the file) if it is damaged or misplaced: then it is
        computed again and its file replaced, never used."""
        lo, hi = cells
        redo = f"Computing this shard ({lo}..{hi}) again; its file is replaced when done"
        try:
            found = self.store.read(address)  # type: ignore[union-attr]
        except ArtifactError as err:
            warnings.warn(f"RayExecutor: {err}. {redo}", TlInterpWarning, stacklevel=3)
            return False
        if found is None or ((found.lo, found.hi) == cells and _rows(found.values) == hi - lo):
            return found
        path = self.store.path(address)  # type: ignore[union-attr]
        warnings.warn(f"RayExecutor: the shard {str(path)!r} holds cells {found.lo}..{found.hi} "
                      f"({_rows(found.values)} rows), not {lo}..{hi}. {redo}", TlInterpWarning, stacklevel=3)
        return False

    def _source(self, pool: _cluster.Pool, model: Any, digest: str, deadline: float) -> tuple[tuple[Any, ...], str]:
        """How workers get the model: by name when a replica loaded by name is the same model
        (weights, configuration), else its pickled bytes through the object store."""
        ray = self._ray
        name = getattr(model, "tl_interp_load_name", None)
        if name is not None:
            source = ("name", digest, name, dict(getattr(model, "tl_interp_load_kwargs", {})))
            refs = [a.prepare.remote(source) for a in pool.actors]
            _cluster.wait_loaded(pool, refs, deadline, self.start_timeout)
            same = True
            for ref in refs:  # every answer read: no stray errors
                try:
                    ray.get(ref)
                except UnsupportedError:  # changed since it was loaded: send the client's own
                    same = False
            if same:
                return source, "load by name"
        ref = pool.shipped.get(digest)
        if ref is None:
            ref = ray.put(dumps(model))
            pool.shipped.clear()
            pool.shipped[digest] = ref
        source = ("pickle", digest, [ref])
        refs = [a.prepare.remote(source) for a in pool.actors]
        _cluster.wait_loaded(pool, refs, deadline, self.start_timeout)
        ray.get(refs)
        return source, "object store"

    def _compute(self, plan: Plan, digest: str, payload: bytes, ranges: list[tuple[int, int]], todo: list[int],
                 addresses: list[str] | None, shards: dict[int, Shard], info: dict[str, Any], bar: Any) -> None:
        """Evaluate the shards ``todo`` on the pool, one in flight per worker, storing each as it lands."""
        ray = self._ray
        on_gpu = any(p.is_cuda for p in plan.model.parameters())
        pool = self._pool(on_gpu)
        deadline = time.monotonic() + self.start_timeout  # one budget: processes started and the model held
        _cluster.wait_ready(pool, timeout=self.start_timeout)
        source, info["model_transfer"] = self._source(pool, plan.model, digest, deadline)
        info["workers"] = len(pool.actors)
        # workers keep base runs by plan: the same content (known from the store's addresses) is the same plan
        plan_id = blake(*(a.encode() for a in addresses)).hex() if addresses is not None else uuid.uuid4().hex
        plan_ref = ray.put(payload)
        queue, idle = deque(todo), list(range(len(pool.actors)))[::-1]
        running: dict[Any, tuple[int, int, float]] = {}
        overheads: list[float] = []
        failure: BaseException | None = None
        try:
            while queue or running:
                while idle and queue and failure is None:
                    worker, i = idle.pop(), queue.popleft()
                    ref = pool.actors[worker].evaluate.remote(source, plan_id, [plan_ref], *ranges[i])
                    running[ref] = (i, worker, time.perf_counter())
                if not running:
                    break
                (ref,), _ = ray.wait(list(running), num_returns=1)
                i, worker, sent = running.pop(ref)
                try:
                    out = ray.get(ref)
                except Exception as err:  # noqa: BLE001 - finish what is in flight, then raise the first
                    failure = failure or err
                    idle.append(worker)
                    continue
                idle.append(worker)
                overheads.append(time.perf_counter() - sent - out["compute_s"] - out["setup_s"])
                info["base_runs"] += int(out["built"])
                info["worker_compute_s"] += out["compute_s"]
                for k in _ENGINE_COUNTS:
                    info[k] += out["stats"].get(k, 0)
                lo, hi = ranges[i]
                shard = Shard(lo, hi, out["values"], out["base"], out["paths"], out["stats"])
                if addresses is not None:
                    self.store.write(addresses[i], shard)  # type: ignore[union-attr]
                shards[i] = shard
                bar.update(hi - lo)
        finally:
            for ref in running:  # interrupted: nothing more is computed for this run
                ray.cancel(ref)
        info["shard_overhead_ms"] = 1000 * sum(overheads) / max(1, len(overheads))
        if failure is not None:
            raise failure
