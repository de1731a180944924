"""A content-addressed store of finished shards: one safetensors file per shard.

A shard is a contiguous range of a plan's cells. Its address is a digest of everything its
values depend on: the model (id, class, configuration, weights), the base batch (tokens and
attention mask), the metric, the study's signature, the engine options, the sites, the cells'
keys and the cells themselves (their hooks, by content: ``_fingerprint``), the range, and the
package version. Rerunning a study with the same ``store=`` reads back every shard it already
finished, so a sweep interrupted by a crash or Ctrl-C resumes where it stopped, and a changed
input (other prompts, weights, vectors, seed) addresses other shards.

Files are written atomically and checksummed like every artefact (``tl_interp._io.save_checked``:
a SHA-256 of the tensors and metadata in the file's own header), so a reader never sees half a
shard and a damaged one is never used. Each holds the shard's values, the base run's values
and, in its metadata, the fast paths the engine took and the shard's own address. Reading
checks both: a flipped byte, a truncated file, or a valid shard of another cell range or plan
copied in its place is an ``ArtifactError`` naming the file (``RayExecutor`` then recomputes
that shard, with a warning naming the file, and replaces it).
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from tl_interp._checks import checked
from tl_interp._io import atomic_file, load_checked, save_checked
from tl_interp.engine.executors import Plan
from tl_interp.engine.run import Values
from tl_interp.errors import ArtifactError
from tl_interp.distributed._fingerprint import Fingerprint, blake, tensor_digest

__all__ = ["ShardStore", "Shard", "shard_addresses"]

FORMAT = "tl_interp-shard-2"  # 2: checksummed; shard-1 files (no checksum) have other addresses, never read


@dataclass(frozen=True)
class Shard:
    """One finished shard: the values of cells ``lo .. hi`` and the base run's values."""

    lo: int
    hi: int
    values: Values
    base: Values
    paths: dict[str, str]
    stats: dict[str, Any]


@checked
def shard_addresses(plan: Plan, model_digest: str, ranges: list[tuple[int, int]]) -> list[str]:
    """The address (hex digest) of each cell range of ``plan`` on the model ``model_digest``."""
    from tl_interp import __version__
    from tl_interp.models._adapter import adapt

    fp = Fingerprint(opaque={id(plan.model): "the plan's model"})
    batch = plan.batch
    common = blake(FORMAT.encode(), __version__.encode(), adapt(plan.model).model_id.encode(), model_digest.encode(),
                    tensor_digest(batch.tokens), tensor_digest(batch.attention_mask), fp.digest(plan.metric),
                    fp.digest(plan.signature), fp.digest(plan.options), fp.digest(plan.sites))
    out = []
    for lo, hi in ranges:
        cells = [fp.digest(cell) for cell in plan.cells[lo:hi]]
        out.append(blake(common, repr((lo, hi)).encode(), fp.digest(plan.keys[lo:hi]), *cells).hex())
    return out


def _flat(prefix: str, values: Values) -> dict[str, Tensor]:
    if isinstance(values, Tensor):
        return {prefix: values.detach().cpu().contiguous()}
    return {f"{prefix}/{k}": v.detach().cpu().contiguous() for k, v in values.items()}


def _unflat(prefix: str, tensors: dict[str, Tensor], keys: list[str] | None) -> Values:
    if keys is None:
        return tensors[prefix]
    return {k: tensors[f"{prefix}/{k}"] for k in keys}


class ShardStore:
    """A directory of finished shards, checked writable before any work is sent.

    Args:
        root: the directory (created if missing; a local or shared filesystem).

    Raises:
        ArtifactError: the directory can't be created or written.

    Example:
        >>> import tempfile, torch
        >>> store = ShardStore(tempfile.mkdtemp())
        >>> store.write("ab12", Shard(0, 2, torch.ones(2, 3), torch.zeros(3), {"read_only": "on"}, {}))
        >>> store.read("ab12").values.shape, store.read("cd34")
        (torch.Size([2, 3]), None)
        >>> _ = store.path("ab12").rename(store.path("cd34"))  # a shard under another's name
        >>> store.read("cd34")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        tl_interp.errors.ArtifactError: the shard '.../cd34.safetensors' is intact but is not the shard stored ...
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser()
        self.check()

    def check(self) -> None:
        """Create the directory and write (then remove) a probe file, or raise ArtifactError."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with atomic_file(self.root / ".write-probe") as tmp:
                tmp.write_bytes(b"ok")
            (self.root / ".write-probe").unlink()
        except OSError as err:
            raise ArtifactError(f"the shard store {str(self.root)!r} can't be written ({type(err).__name__}: "
                                f"{err.strerror or err}); give store= a directory you can write, or store=None "
                                "to keep no shards") from None

    def path(self, address: str) -> Path:
        return self.root / f"{address}.safetensors"

    def read(self, address: str) -> Shard | None:
        """The finished shard at ``address``, or None if it was never written.

        Raises:
            ArtifactError: the file is corrupt, truncated, carries no checksum, or holds
                another address's shard (swapped or copied in); the message names the file.
        """
        path = self.path(address)
        if not path.exists():
            return None
        fix = "delete it and rerun to compute it again (RayExecutor recomputes it by itself)"
        tensors, meta = load_checked(path, fix=fix)
        if meta.get("format") != FORMAT or meta.get("address") != address:
            raise ArtifactError(f"the shard {str(path)!r} is intact but is not the shard stored under its name (format "
                                f"{meta.get('format')!r}, address {meta.get('address')!r}): it was swapped or copied "
                                f"from another plan or store; {fix}")
        try:
            keys = json.loads(meta["keys"])
            return Shard(int(meta["lo"]), int(meta["hi"]), _unflat("values", tensors, keys),
                         _unflat("base", tensors, keys), json.loads(meta["paths"]), json.loads(meta["stats"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ArtifactError(f"the shard {str(path)!r} lacks part of a shard ({type(err).__name__}: {err}); "
                                f"{fix}") from None

    def write(self, address: str, shard: Shard) -> None:
        """Write ``shard`` under ``address``, atomically, with its checksum."""
        keys = None if isinstance(shard.values, Tensor) else list(shard.values)
        tensors = {**_flat("values", shard.values), **_flat("base", shard.base)}
        meta = {"format": FORMAT, "address": address, "lo": str(shard.lo), "hi": str(shard.hi),
                "keys": json.dumps(keys), "paths": json.dumps(shard.paths), "stats": json.dumps(shard.stats)}
        save_checked(self.path(address), tensors, meta)

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("*.safetensors"))
