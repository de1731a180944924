"""Connecting to Ray and keeping a pool of workers for the session.

``connect`` joins the cluster an address names (after checking, within a timeout, that
something answers there: ``ray.init`` itself waits minutes on a dead address), or starts a
local instance on the loopback address. ``pool`` keeps one set of worker actors per
cluster and resource shape, shared by every ``RayExecutor`` of the session: workers are
generic (each task says which model it needs), so switching studies or models reuses them.
"""

import math
import os
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any

from tl_interp.errors import OptionError, UnsupportedError

__all__ = ["import_ray", "connect", "pool", "Pool", "wait_ready", "wait_loaded"]

INSTALL = "pip install tl_interp[ray]"
_POOLS: dict[tuple[Any, ...], "Pool"] = {}


def import_ray() -> Any:
    """The ``ray`` module, or an error saying how to install it."""
    try:
        import ray
    except ImportError as err:
        raise UnsupportedError(f"ti.distributed runs on Ray, which is not installed ({err}); install the extra with "
                               f"`{INSTALL}` (or run locally: executor=None)") from None
    return ray


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``"host:port"`` / ``"ray://host:port"``; None for ``"auto"``/``"local"``."""
    if address in ("auto", "local"):
        return None
    bare = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = bare.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise OptionError(f"RayExecutor: address must be 'host:port', 'ray://host:port' or 'auto', got {address!r}")
    return host.strip("[]"), int(port)


_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # HTTP/2 preface + SETTINGS


def _probe(address: str, timeout: float) -> None:
    """Check, within ``timeout``, that a gRPC server (Ray's GCS or Ray Client) answers at ``address``."""
    where = _host_port(address)
    if where is None:
        return
    fix = (f"Start one there with `ray start --head --port={where[1]}`, check the address the head printed, or "
           "pass address=None for a local instance")
    try:
        with socket.create_connection(where, timeout=timeout) as conn:
            conn.settimeout(timeout)
            conn.sendall(_PREFACE)
            reply = conn.recv(9)
    except socket.timeout:
        raise OptionError(f"RayExecutor: something at {address!r} accepted the connection but gave no answer within "
                          f"{timeout:g}s; it is not a Ray cluster. {fix}") from None
    except OSError as err:
        raise OptionError(f"RayExecutor: no Ray cluster answers at {address!r} ({err.strerror or err}). {fix}") from None
    if len(reply) < 4 or reply[3] != 4:  # a gRPC server answers the preface with a SETTINGS frame
        raise OptionError(f"RayExecutor: the server at {address!r} is not a Ray cluster (no gRPC answer). {fix}")


def connect(address: str | None, timeout: float) -> Any:
    """Ray, connected: to ``address``, to the instance this process already joined, or to a
    new local instance on the loopback address (no dashboard)."""
    if address is None and "ray" not in sys.modules:
        # a local instance stays on 127.0.0.1 (else Ray binds the node to the machine's network address);
        # Ray reads this when it is imported
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = import_ray()
    if address is not None:
        _probe(address, timeout)
    if ray.is_initialized():
        current = ray.get_runtime_context().gcs_address
        where = _host_port(address) if address is not None else None
        if where is not None and current.rpartition(":")[2] != str(where[1]):
            raise OptionError(f"RayExecutor: this process is already connected to the Ray cluster at {current!r}, "
                              f"not {address!r}; call ray.shutdown() first, or pass address=None to use it")
        return ray
    if address is None:
        ray.init(include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)
    return ray


@dataclass
class Pool:
    """The worker actors of one cluster and resource shape."""

    actors: list[Any]
    options: dict[str, Any]
    shipped: dict[str, Any]  # model digest -> ObjectRef of its pickled bytes (the latest only)

    def pids(self) -> list[int]:
        """Each worker's process id (after restarts: the new process)."""
        ray = import_ray()
        return ray.get([a.pid.remote() for a in self.actors])


def _actor(options: dict[str, Any]) -> Any:
    ray = import_ray()
    from tl_interp.distributed._worker import Worker

    device = "cuda" if options["num_gpus"] else "cpu"
    threads = max(1, int(options["num_cpus"]))
    return ray.remote(Worker).options(**options).remote(device, threads)


def pool(num_workers: int | None, cpus: float, gpus: float, max_restarts: int, max_task_retries: int) -> Pool:
    """The session's pool for this shape of worker (created on first use).

    Args:
        num_workers: actors (default: as many as the cluster has CPUs, or GPUs, for).
        cpus, gpus: resources of each actor (a GPU each: one replica per GPU).
        max_restarts, max_task_retries: Ray's fault tolerance for the actors.
    """
    ray = import_ray()
    if num_workers is None:
        resources = ray.cluster_resources()
        have = resources.get("GPU", 0) / gpus if gpus else resources.get("CPU", 1) / max(cpus, 1e-9)
        num_workers = max(1, int(have))
    context = ray.get_runtime_context()
    # which ray.init this is: job ids restart at 01000000 in every new local instance, so the
    # driver's node id (new for every instance) and the cluster's address tell them apart
    session = (context.get_job_id(), context.get_node_id(), context.gcs_address)
    key = (session, num_workers, cpus, gpus, max_restarts, max_task_retries)
    for stale in [k for k in _POOLS if k[0] != key[0]]:  # a pool of an earlier ray.init: its actors are gone
        del _POOLS[stale]
    if key not in _POOLS:
        for old in list(_POOLS):  # one pool at a time holds the cluster's resources
            for actor in _POOLS.pop(old).actors:
                ray.kill(actor)
        options = {"num_cpus": cpus, "num_gpus": gpus, "max_restarts": max_restarts,
                   "max_task_retries": max_task_retries}
        _POOLS[key] = Pool([_actor(options) for _ in range(num_workers)], options, {})
    return _POOLS[key]


def _phases(p: Pool, answered: set[int], loading: bool) -> list[str]:
    """What each worker of ``p`` is doing, from Ray's actor table (the workers not in ``answered``)."""
    ray = import_ray()
    free = ray.available_resources()
    fits = all(free.get(kind, 0) + 1e-9 >= p.options[key] for kind, key in (("CPU", "num_cpus"), ("GPU", "num_gpus")))
    out = []
    for i, actor in enumerate(p.actors):
        if i in answered:
            out.append("ready" if loading else "started")
            continue
        try:  # the GCS actor table; Ray's public state API needs the dashboard, which local instances lack
            from ray._private import state

            info = state.actors(actor._actor_id.hex()) or {}
        except Exception:  # noqa: BLE001 - an internal of Ray: say we can't tell rather than fail
            info = {}
        status, port = info.get("State"), (info.get("Address") or {}).get("Port", 0)
        if status == "ALIVE":
            out.append("loading the model" if loading else "started, busy with an earlier task")
        elif status in ("PENDING_CREATION", "DEPENDENCIES_UNREADY"):
            # a leased worker has an address; without one it waits for resources, or (when they are
            # free) for Ray to get round to it
            out.append("starting its process (importing torch and tl_interp)" if port else
                       "waiting for Ray to start a process" if fits else "not scheduled")
        elif status == "RESTARTING":
            out.append("restarting after its process died")
        elif status == "DEAD":
            out.append("dead (its process exited; see Ray's worker logs)")
        else:
            out.append("in an unknown state")
    return out


def _explain(p: Pool, phases: list[str], waited: float, what: str) -> str:
    ray = import_ray()
    counts: dict[str, int] = {}
    for phase in phases:
        counts[phase] = counts.get(phase, 0) + 1
    doing = ", ".join(f"{n} {phase}" for phase, n in counts.items())
    text = (f"RayExecutor: {what} within start_timeout={waited:.0f}s; the {len(phases)} workers: {doing}. ")
    if "not scheduled" not in counts:
        return text + ("Ray has the resources: the workers are slow, not blocked (a loaded machine, a large model); "
                       "pass a longer start_timeout=")
    total, free = ray.cluster_resources(), ray.available_resources()
    need = {"CPU": p.options["num_cpus"], "GPU": p.options["num_gpus"]}
    short = [f"{len(p.actors)} workers x {each:g} {kind} = {len(p.actors) * each:g}, the cluster has "
             f"{total.get(kind, 0):g}" for kind, each in need.items()
             if each and len(p.actors) * each > total.get(kind, 0) + 1e-9]
    if short:
        return text + (f"The cluster lacks the resources ({'; '.join(short)}): pass fewer num_workers= or smaller "
                       "cpus_per_worker= / gpus_per_worker=, or add nodes")
    return text + (f"The cluster has the resources in total, but other tasks or actors hold them now (free: "
                   f"{free.get('CPU', 0):g} CPU, {free.get('GPU', 0):g} GPU); wait for them, or pass a longer "
                   "start_timeout=")


def wait_ready(p: Pool, timeout: float) -> None:
    """Block until every actor has started (so placement problems surface as one clear error).

    Raises:
        UnsupportedError: not every actor answered within ``timeout`` seconds; says what each
            was doing, and blames resources only when Ray lacks them.
    """
    ray = import_ray()
    refs = [a.pid.remote() for a in p.actors]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=None if math.isinf(timeout) else timeout)
    if len(ready) < len(refs):
        answered = {i for i, ref in enumerate(refs) if ref in ready}
        raise UnsupportedError(_explain(p, _phases(p, answered, loading=False), timeout,
                                        f"only {len(ready)} of {len(refs)} workers started"))


def wait_loaded(p: Pool, refs: list[Any], deadline: float, timeout: float) -> None:
    """Block until every worker answered its ``prepare`` task (holds the model), or the deadline.

    Raises:
        UnsupportedError: saying how many workers hold the model and what the others are doing.
    """
    ray = import_ray()
    left = max(0.0, deadline - time.monotonic())
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=None if math.isinf(left) else left)
    if len(ready) < len(refs):
        answered = {i for i, ref in enumerate(refs) if ref in ready}
        raise UnsupportedError(_explain(p, _phases(p, answered, loading=True), timeout,
                                        f"only {len(ready)} of {len(refs)} workers had loaded the model"))
