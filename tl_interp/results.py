"""Typed results: values with named axes, labels, extras and provenance.

Every study returns a ``Result`` (or a subclass): ``.values`` is the tensor of metric values,
``.axes`` names its axes in order (``("layer", "pos")``), ``.labels`` gives human-readable
labels per axis (token strings for positions), ``.extras`` holds tensors that travel with the
values (baselines, per-prompt values, interval bounds), and ``.provenance`` records the model,
the interventions, a hash of the prompts, the seed and the package version. ``save``/``load``
round-trip exactly through one safetensors file whose header carries the JSON, written
atomically (temporary file, then rename).
"""

import datetime
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from tl_interp._checks import checked
from tl_interp._io import load_checked, save_checked
from tl_interp.errors import ArtifactError, ShapeError

__all__ = ["Provenance", "Result", "prompt_hash", "register_result"]

_KINDS: dict[str, type["Result"]] = {}
_STUDIES = ("tl_interp.patching", "tl_interp.ablation", "tl_interp.steering", "tl_interp.similarity",
            "tl_interp.geometry")


@checked
def register_result(cls: type["Result"]) -> type["Result"]:
    """Class decorator: lets ``Result.load`` rebuild this subclass from its ``kind``."""
    _KINDS[cls.kind] = cls
    return cls


@checked
def prompt_hash(*items: Any) -> str:
    """A short stable hash of prompts (strings or token tensors), for provenance.

    Example:
        >>> prompt_hash(["a", "b"]) == prompt_hash(["a", "b"]) != prompt_hash(["a", "c"])
        True
    """
    h = hashlib.sha256()
    for item in items:
        if isinstance(item, Tensor):
            h.update(str(tuple(item.shape)).encode())
            h.update(item.detach().cpu().contiguous().numpy().tobytes())
        elif isinstance(item, str):
            h.update(item.encode())
        elif isinstance(item, Sequence):
            h.update(prompt_hash(*item).encode())
        else:
            h.update(repr(item).encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Provenance:
    """Where a result came from: enough to rerun it."""

    model_id: str
    interventions: tuple[str, ...] = ()
    prompt_hash: str = ""
    seed: int | None = None
    version: str = ""
    created: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def make(cls, model_id: str, **kw: Any) -> "Provenance":
        from tl_interp import __version__

        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        kw.setdefault("version", __version__)
        kw.setdefault("created", now)
        if "interventions" in kw:
            kw["interventions"] = tuple(kw["interventions"])
        return cls(model_id=model_id, **kw)


@dataclass(frozen=True, eq=False)
class Result:
    """Values along named axes, with labels, extras and provenance."""

    kind: ClassVar[str] = "result"

    values: Tensor
    axes: tuple[str, ...]
    metric: str
    provenance: Provenance
    labels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    extras: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.values.ndim != len(self.axes):
            raise ShapeError(f"values have {self.values.ndim} axes, {len(self.axes)} names given: {self.axes}")
        for axis, labels in self.labels.items():
            if axis not in self.axes:
                raise ShapeError(f"labels for unknown axis {axis!r}; axes are {self.axes}")
            if len(labels) != self.values.shape[self.axes.index(axis)]:
                raise ShapeError(f"{len(labels)} labels for axis {axis!r} of length "
                                 f"{self.values.shape[self.axes.index(axis)]}")

    def __repr__(self) -> str:
        """A short summary: shape, the largest cells, provenance (full data: ``.values``,
        ``.to_frame()``)."""
        shape = ", ".join(f"{a}={n}" for a, n in zip(self.axes, self.values.shape))
        flat = self.values.detach().double().flatten()
        top = ""
        if flat.numel() and self.values.ndim:
            order = torch.nan_to_num(flat.abs(), nan=-1.0).argsort(descending=True)[:3].tolist()
            cells = []
            for i in order:
                index = [int(j) for j in torch.unravel_index(torch.tensor(i), self.values.shape)]
                where = ", ".join(self.label(a, j) for a, j in zip(self.axes, index))
                cells.append(f"[{where}] {float(flat[i]):.4g}")
            top = "; top: " + ", ".join(cells)
        return f"{type(self).__name__}({self.metric}; {shape}; model={self.provenance.model_id}{top})"

    def label(self, axis: str, index: int) -> str:
        """The label of ``index`` along ``axis`` (the index itself when unlabelled)."""
        labels = self.labels.get(axis)
        return labels[index] if labels else str(index)

    def to_frame(self) -> Any:
        """A long pandas DataFrame: one row per cell, a column per axis (+ its label), ``value``,
        and every extra with the values' shape."""
        import pandas as pd

        grids = torch.meshgrid(*[torch.arange(n) for n in self.values.shape], indexing="ij")
        data: dict[str, Any] = {}
        for axis, grid in zip(self.axes, grids):
            flat = grid.flatten().tolist()
            data[axis] = flat
            if axis in self.labels:
                data[f"{axis}_label"] = [self.labels[axis][i] for i in flat]
        data["value"] = self.values.detach().cpu().flatten().tolist()
        for name, extra in self.extras.items():
            if extra.shape == self.values.shape:
                data[name] = extra.detach().cpu().flatten().tolist()
        return pd.DataFrame(data)

    def _repr_html_(self) -> str:
        """A compact table of the values and the provenance, for notebooks (no JavaScript)."""
        from tl_interp.viz.html import result_html

        return result_html(self)

    def figure(self, **kwargs: Any) -> Any:
        """A plotly figure of the values (heatmap for 2-D, bars/lines for 1-D)."""
        from tl_interp.viz.figures import result_figure

        return result_figure(self, **kwargs)

    # -- persistence -------------------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        return {"kind": self.kind, "axes": list(self.axes), "metric": self.metric,
                "labels": {k: list(v) for k, v in self.labels.items()},
                "provenance": {**self.provenance.__dict__, "interventions": list(self.provenance.interventions)},
                "extra": self._extra_meta()}

    def _extra_meta(self) -> dict[str, Any]:
        return {}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write values, extras and metadata to one checksummed safetensors file, atomically.

        The file records the result's kind and defining module (so ``Result.load`` rebuilds the
        subclass in a fresh process) and the order of the extras. A file already at ``path`` is
        replaced (you named it), atomically.

        Raises:
            ArtifactError: ``path`` is a directory or lies under a file (naming it and the fix).
        """
        tensors = {"values": self.values}
        tensors.update({f"extra.{k}": v for k, v in self.extras.items()})
        meta = {**self._meta(), "module": type(self).__module__, "extras_order": list(self.extras)}
        return save_checked(path, tensors, {"tl_interp": json.dumps(meta)})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Result":
        """Read a result written by ``save``; its subclass is restored from the file.

        Raises:
            ArtifactError: the file is missing, empty, truncated, corrupt (checksum mismatch)
                or not a saved result.

        Example:
            >>> import tempfile
            >>> r = Result(torch.zeros(2), ("layer",), "m", Provenance.make("demo"), extras={"b": torch.ones(2), "a": torch.ones(2)})
            >>> list(Result.load(r.save(tempfile.mkdtemp() + "/r.safetensors")).extras)
            ['b', 'a']
        """
        fix = "save the result again (it cannot be repaired)"
        tensors, header = load_checked(path, fix=fix)
        try:
            meta = json.loads(header["tl_interp"])
            prov = dict(meta["provenance"])
            prov["interventions"] = tuple(prov["interventions"])
            extras = {name: tensors[f"extra.{name}"] for name in meta.get("extras_order", [])}
            extras.update({k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")})
            fields = dict(values=tensors["values"], axes=tuple(meta["axes"]), metric=meta["metric"],
                          provenance=Provenance(**prov), labels={k: tuple(v) for k, v in meta["labels"].items()},
                          extras=extras)
            kind, module = meta["kind"], meta.get("module") or ""
        except (KeyError, TypeError, ValueError) as err:
            raise ArtifactError(f"{str(path)!r} is a safetensors file but not a saved tl_interp result "
                                f"({type(err).__name__}: {err}); {fix}") from err
        if kind not in _KINDS:
            import importlib  # the defining module registers the kind; only tl_interp's own are imported

            if module == "tl_interp" or module.startswith("tl_interp."):
                importlib.import_module(module)
            elif not module:  # written before results recorded their module: tl_interp's studies
                for study in _STUDIES:
                    importlib.import_module(study)
        if kind not in _KINDS:
            raise ArtifactError(f"{str(path)!r} holds a result of kind {kind!r} (module {module!r}), which "
                                f"this tl_interp does not define; known kinds: {', '.join(sorted(_KINDS))}")
        klass = _KINDS[kind]
        return klass._rebuild(extra_meta=meta.get("extra", {}), **fields)

    @classmethod
    def _rebuild(cls, extra_meta: dict[str, Any], **fields: Any) -> "Result":
        return cls(**fields)


register_result(Result)

