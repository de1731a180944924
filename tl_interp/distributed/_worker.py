"""The Ray actor that evaluates shards: one model replica, one base run per plan.

A worker is generic: each task names the model it needs (by digest) and how to get it, either
loaded by name (``ti.models.load``, for a model that came from there) or unpickled from
the bytes the client put once in Ray's object store. The replica is kept for the next task;
so is the base run of each plan (the clean/corrupted caches, keys and values a study reuses),
so it runs once per worker and plan, not once per shard. After a restart (Ray's
``max_restarts``) the retried task brings everything needed to rebuild both.

Tensors travel pickled (cloudpickle, so the cells' closures go by value) and are unpickled
onto the replica's device, whatever device the client's tensors were on.
"""

import io
import os
import pickle
import time
from collections import OrderedDict
from typing import Any

import torch

from tl_interp.engine.run import BaseRun, Values
from tl_interp.errors import UnsupportedError

__all__ = ["Worker", "dumps", "loads", "ModelSource"]

# how to get a model: ("name", digest, name, load kwargs) or ("pickle", digest, [ObjectRef of dumps(model)])
ModelSource = tuple[Any, ...]


def dumps(obj: Any) -> bytes:
    """``obj`` as bytes, closures and lambdas by value (cloudpickle)."""
    from ray import cloudpickle

    return cloudpickle.dumps(obj)


class _OnDevice(pickle.Unpickler):
    """Unpickles tensors straight onto one device (torch pickles storages via ``torch.load``)."""

    def __init__(self, data: bytes, device: str) -> None:
        super().__init__(io.BytesIO(data))
        self.device = device

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch.storage" and name == "_load_from_bytes":
            return lambda b: torch.load(io.BytesIO(b), map_location=self.device, weights_only=False)
        return super().find_class(module, name)


def loads(data: bytes, device: str = "cpu") -> Any:
    """Bytes from ``dumps`` back into objects, every tensor on ``device``."""
    return _OnDevice(data, device).load()


def _to_cpu(values: Values) -> Values:
    if isinstance(values, dict):
        return {k: v.detach().cpu() for k, v in values.items()}
    return values.detach().cpu()


class Worker:
    """A Ray actor holding one model replica and the base runs of recent plans.

    Args:
        device: where the replica and the plans' tensors live ("cpu", or "cuda": the GPU
            Ray assigned to this actor).
        threads: torch intra-op threads (the actor's share of CPUs).
    """

    def __init__(self, device: str = "cpu", threads: int = 1) -> None:
        torch.set_num_threads(max(1, threads))
        self.device = device
        self.model: Any = None
        self.model_digest: str | None = None
        self.runs: OrderedDict[str, tuple[Any, BaseRun]] = OrderedDict()

    def pid(self) -> int:
        return os.getpid()

    def prepare(self, source: ModelSource) -> int:
        """Hold the model ``source`` names (an error if the replica is not that model)."""
        self._model(source)
        return os.getpid()

    def _model(self, source: ModelSource) -> Any:
        from tl_interp.distributed._fingerprint import model_digest

        kind, digest = source[0], source[1]
        if self.model_digest == digest:
            return self.model
        self.model, self.model_digest = None, None
        self.runs.clear()
        if kind == "name":
            from tl_interp.models import load

            model = load(source[2], **{**source[3], "device": self.device})
        else:
            import ray

            model = loads(ray.get(source[2][0]), self.device)
        if model_digest(model) != digest:
            raise UnsupportedError(f"the worker's replica of the model ({kind}: {source[2] if kind == 'name' else ''}) "
                                   "differs from the client's model (weights or configuration)")
        self.model, self.model_digest = model, digest
        return model

    def evaluate(self, source: ModelSource, plan_id: str, payload: list[Any], lo: int, hi: int) -> dict[str, Any]:
        """Values of the cells ``lo .. hi`` of the plan ``plan_id`` (payload: [ObjectRef of its bytes])."""
        start = time.perf_counter()
        model = self._model(source)
        setup = time.perf_counter() - start
        built = plan_id not in self.runs
        if built:
            import ray

            t0 = time.perf_counter()
            plan = loads(ray.get(payload[0]), self.device)
            run = BaseRun(model, plan["batch"], plan["metric"], plan["sites"], plan["options"])
            self.runs[plan_id] = (plan["cells"], run)
            while len(self.runs) > 2:  # a steering battery's plans come one after another
                self.runs.popitem(last=False)
            setup += time.perf_counter() - t0
        cells, run = self.runs[plan_id]
        self.runs.move_to_end(plan_id)
        before = dict(run.stats)
        t0 = time.perf_counter()
        values = run.evaluate(cells[lo:hi])
        compute = time.perf_counter() - t0
        stats = {k: v - before.get(k, 0) for k, v in run.stats.items()}
        return {"values": _to_cpu(values), "base": _to_cpu(run.values), "paths": run.paths, "stats": stats,
                "compute_s": compute, "setup_s": setup, "built": built, "pid": os.getpid()}
