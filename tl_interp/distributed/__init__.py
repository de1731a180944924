"""Studies beyond one machine: a plan's cells sharded over a Ray cluster, resumable, equal
to the local run.

Pass ``executor=ti.distributed.RayExecutor(...)`` to ``ti.patching.sweep``,
``ti.ablation.scan``, ``ti.steering.evaluate`` (or any study on the engine): the cells are
cut into shards, each Ray worker holds one model replica and one base run per plan, and with
``store=`` every finished shard is kept (safetensors, content-addressed) so a rerun computes
only what is missing. Ray is an optional extra: ``pip install tl_interp[ray]``. See
``docs/distributed.md``.
"""

from tl_interp.distributed._executor import RayExecutor
from tl_interp.distributed._fingerprint import Fingerprint, model_digest
from tl_interp.distributed._store import Shard, ShardStore, shard_addresses

__all__ = ["RayExecutor", "ShardStore", "Shard", "shard_addresses", "Fingerprint", "model_digest"]
