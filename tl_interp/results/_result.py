"""Typed results: values with named axes, labels, extras and provenance (``ti.results.Result``).

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

from tl_interp._checks import checked, retired
from tl_interp._io import load_checked, save_checked
from tl_interp.results._ranking import Ranking, check_k
from tl_interp.errors import ArtifactError, OptionError, ShapeError
from tl_interp._checks import check_count, checked, public_name
from tl_interp.errors import ArtifactError, ShapeError, TypeCheckError

__all__ = ["Provenance", "Result", "prompt_hash", "register_result"]

_KINDS: dict[str, type["Result"]] = {}
_STUDIES = ("tl_interp.patching", "tl_interp.ablation", "tl_interp.steering", "tl_interp.similarity",
            "tl_interp.geometry")


REPR_MAX_CHARS = 1500  # a repr is a line to read, never the data: .values / .to_frame() / .summary() hold more
LABEL_CHARS = 24


def short(text: Any, limit: int = LABEL_CHARS) -> str:
    """``text`` on one line (newlines and tabs escaped), cut to ``limit`` characters with an ellipsis.

    Example:
        >>> short("a very long token label indeed", 10), short("\\n")
        ('a very lo…', '\\\\n')
    """
    text = str(text).replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def number(value: Tensor | float) -> str:
    """A scalar to 4 significant digits; a tensor of several values as its mean and count.

    Example:
        >>> number(torch.tensor(-5.4912)), number(torch.tensor([1.0, 2.0]))
        ('-5.491', 'mean 1.5 over 2')
    """
    if isinstance(value, Tensor) and value.numel() != 1:
        return f"mean {float(value.double().mean()):.4g} over {value.numel()}" if value.numel() else "none"
    return f"{float(value):.4g}"


def bounded(text: str, limit: int = REPR_MAX_CHARS) -> str:
    """``text`` cut to ``limit`` characters (saying so), for reprs."""
    return text if len(text) <= limit else text[:limit - 5] + " ...)"


@checked
def register_result(cls: type["Result"]) -> type["Result"]:
    """Class decorator: lets ``Result.load`` rebuild this subclass from its ``kind``.

    A ``@dataclass`` subclass gets a generated ``__repr__`` that prints every field in full
    (a 1536-vector cosine matrix printed its labels twice); unless the class defines its own,
    the short ``Result.__repr__`` is put back.
    """
    if not (isinstance(cls, type) and issubclass(cls, Result)):  # beartype skips the forward reference
        raise TypeCheckError(f"{public_name(register_result)}: cls is {cls!r}; it takes a Result subclass")
    own = cls.__dict__.get("__repr__")
    if own is not None and getattr(cls, "__dataclass_params__", None) is not None \
            and cls.__dataclass_params__.repr and hasattr(own, "__wrapped__"):  # the dataclass-generated one
        cls.__repr__ = Result.__repr__  # type: ignore[method-assign]
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
        """One line: kind, shape, the headline numbers, provenance (full data: ``.values``,
        ``.to_frame()``; a few readable lines: ``.summary()``).

        Example:
            >>> r = Result(torch.tensor([[1.0, -2.0]]), ("layer", "pos"), "logit diff", Provenance("m", seed=0))
            >>> r
            Result(logit diff; layer=1, pos=2; top: [0, 1] -2, [0, 0] 1; model=m, seed=0)
        """
        try:
            headline = self._headline()
        except (KeyError, IndexError, ValueError):  # an extra its headline reads is missing or malformed:
            headline = Result._headline(self)  # a repr never raises; the generic line is still true
        parts = [self.metric, self.shape_text(", "), headline, self.provenance_line()]
        return bounded(f"{type(self).__name__}({'; '.join(p for p in parts if p)})")

    def shape_text(self, sep: str = " x ") -> str:
        """``"layer=30 x pos=12"`` (``"scalar"`` for 0-d values)."""
        return sep.join(f"{a}={n}" for a, n in zip(self.axes, self.values.shape)) or "scalar"

    def provenance_line(self) -> str:
        """The provenance in one line: model, prompt hash, seed, version, number of interventions."""
        p = self.provenance
        items = [f"model={short(p.model_id, 60)}"]
        if p.prompt_hash:
            items.append(f"prompts={p.prompt_hash}")
        if p.seed is not None:
            items.append(f"seed={p.seed}")
        if p.interventions:
            items.append(f"{len(p.interventions)} intervention{'s' if len(p.interventions) > 1 else ''}")
        if p.version:
            items.append(f"tl_interp {p.version}")
        return ", ".join(items)

    def top(self, k: int | None = None, *, per: str | None = None, absolute: bool = True, largest: bool = True) -> Ranking:
        """The ``k`` largest cells: by ``|value|`` (``absolute=False``: signed; ``largest=False``:
        smallest first), NaNs last, each labelled ``"layer 3, pos 5"``.

        Args:
            k: how many cells, at most as many as there are (per row with ``per``); ``None`` (the
                default) lists up to 10; more than there are is a
                ``SelectionError`` that says how many there are.
            per: rank within each entry of this axis instead (``per="layer"``: the k largest of
                each layer); the ranking's ``row_labels`` say which.

        Example:
            >>> r = Result(torch.tensor([[1.0, -2.0]]), ("layer", "pos"), "logit diff", Provenance("m", seed=0))
            >>> r.top(1)
            Ranking(by |value|, largest first: layer 0, pos 1 -2)
        """
        return self._ranking(self.values, check_k(k, f"{type(self).__name__}.top"), per=per, absolute=absolute,
                             largest=largest)

    def _ranking(self, values: Tensor, k: int | None, *, per: str | None = None, absolute: bool = True,
                 largest: bool = True, value_name: str = "value") -> Ranking:
        """``top`` over ``values`` shaped like this result's values (the normalised view ...)."""
        what = f"{type(self).__name__}.top"
        if per is None:
            k = check_k(k, what, values.numel())
            def cell(i: int) -> str:
                index = torch.unravel_index(torch.tensor(i), values.shape) if values.ndim else ()
                return ", ".join(f"{a} {self.label(a, int(j))}" for a, j in zip(self.axes, index))

            return Ranking.of(values, cell, k, absolute=absolute, largest=largest, value_name=value_name)
        if per not in self.axes:
            raise OptionError(f"{type(self).__name__}.top(per={per!r}): per names one of this result's axes "
                              f"{self.axes}")
        a = self.axes.index(per)
        rest = tuple(ax for ax in self.axes if ax != per)
        moved = values.movedim(a, 0).reshape(values.shape[a], -1)
        k = check_k(k, what, moved.shape[1])
        shape = tuple(n for i, n in enumerate(values.shape) if i != a)

        def entry(i: int) -> str:
            index = torch.unravel_index(torch.tensor(i), shape) if shape else ()
            return ", ".join(f"{ax} {self.label(ax, int(j))}" for ax, j in zip(rest, index))

        rows = [self.label(per, i) for i in range(values.shape[a])]
        return Ranking.per_row(moved, rows, entry, k, absolute=absolute, largest=largest, value_name=value_name)

    @retired("top(k)")
    def top_cells(self, k: int = 3, values: Tensor | None = None) -> list[tuple[str, float]]:
        """The ``k`` cells of largest |value| (NaNs last) as ``("[label, label]", value)``, labels shortened."""
        return self._top_cells(check_k(k, "Result.top_cells", (self.values if values is None else values).numel()),
                               values)

    def _top_cells(self, k: int = 3, values: Tensor | None = None) -> list[tuple[str, float]]:
        """The ``k`` cells of largest |value| (NaNs last) as ``("[label, label]", value)``, labels shortened
        (the short form headlines print)."""
        values = self.values if values is None else values
        flat = values.detach().double().flatten().cpu()
        if not flat.numel() or not values.ndim:
            return []
        order = torch.nan_to_num(flat.abs(), nan=-1.0).argsort(descending=True, stable=True)[:k].tolist()
        out = []
        for i in order:
            index = [int(j) for j in torch.unravel_index(torch.tensor(i), values.shape)]
            out.append(("[" + ", ".join(short(self.label(a, j)) for a, j in zip(self.axes, index)) + "]", float(flat[i])))
        return out

    def _headline(self) -> str:
        """The main numbers in one short line (a study's subclass says what they are)."""
        if not self.values.ndim:
            return f"value {float(self.values):.4g}"
        cells = self._top_cells(3)
        return ("top: " + ", ".join(f"{where} {value:.4g}" for where, value in cells)) if cells else "empty"

    def _summary_lines(self) -> list[str]:
        """The body of ``summary()``: one line per headline item (a subclass's own numbers)."""
        if not self.values.ndim:
            return [f"{self.metric:>12}: {float(self.values):.4g}"]
        return [f"{where:>24}: {value:.4g}" for where, value in self._top_cells(10)] or ["(no values)"]

    def summary(self) -> str:
        """A few plain-text lines: what the result is, its main numbers, where it came from.

        Example:
            >>> r = Result(torch.tensor([0.5, -2.0]), ("layer",), "logit diff", Provenance("m"))
            >>> print(r.summary())
            Result: logit diff over layer=2
                                 [1]: -2
                                 [0]: 0.5
            provenance: model=m
        """
        kind = type(self).__name__
        return "\n".join([f"{kind}: {self.metric} over {self.shape_text()}", *self._summary_lines(),
                          f"provenance: {self.provenance_line()}"])

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

    def neutral(self, which: str = "values") -> tuple[float, str]:
        """The value of view ``which`` that means "no change" (a figure draws it white) and the
        colour bar's title; 0 unless the study says otherwise (a patching sweep: its base run)."""
        return 0.0, which

    def figure(self, **kwargs: Any) -> Any:
        """A plotly figure of the values (heatmap for 2-D, bars/lines for 1-D; ``value_scale="symlog"``)."""
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

