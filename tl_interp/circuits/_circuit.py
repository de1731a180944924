"""A circuit: a set of edges of a model's graph, the nodes they imply, and MIB's circuit files.

``Circuit.top`` keeps the k edges with the largest |score| (EAP-IG's ``Graph.apply_topn``);
``Circuit.greedy`` grows the circuit from ``logits`` upwards, always taking the best-scoring
edge whose receiver is already in the circuit (EAP-IG's ``Graph.apply_greedy``), so every
edge it takes reaches the logits. Both then prune as the reference does (``Graph.prune``):
nodes without an outgoing edge, or without an incoming one (``input`` excepted), are
removed with their edges until nothing changes. With corrupted activations as the
ablation, pruning never changes a circuit's exact faithfulness (a node with no incoming
circuit edge computes its corrupted output anyway, and one with no outgoing edge feeds
nothing kept); with mean or zero ablation it does, and the reference evaluates the pruned
circuit (``evaluate_graph`` prunes first), so both builders prune by default.

Circuit files are MIB's (Mueller et al. 2025, the circuit-localisation track, read by its
``load_graph_from_json``): ``{"cfg": {...}, "nodes": {name: {"in_graph": bool}}, "edges":
{name: {"score": float, "in_graph": bool}}}`` with every edge of the graph under its MIB
name (``"a0.h1->a1.h2<k>"``), so a file written here loads there and back.
"""

import difflib
import heapq
import json
import os
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tl_interp._checks import check_count, checked, renamed
from tl_interp.errors import ArtifactError, InputError, OptionError, ShapeError

__all__ = ["Circuit", "edge_ends", "prune_edges"]

_EDGE = re.compile(r"^(?P<sender>[^->]+)->(?P<receiver>[^<]+)(?:<(?P<letter>[qkv])>)?$")
_HEAD = re.compile(r"^a(\d+)\.h(\d+)$")
_MLP = re.compile(r"^m(\d+)$")


def edge_ends(edge: str) -> tuple[str, str, str | None]:
    """``(sender, receiver node, "q" | "k" | "v" | None)`` of an MIB edge name.

    Example:
        >>> edge_ends("a0.h1->a1.h2<k>")
        ('a0.h1', 'a1.h2', 'k')
    """
    match = _EDGE.match(edge)
    if match is None:
        raise InputError(f"{edge!r} is not an edge name; edges are named 'sender->receiver' with '<q>', '<k>' or "
                         "'<v>' after a head receiver, e.g. 'a0.h1->a1.h2<k>', 'a0.h3->m1', 'm3->logits'")
    return match["sender"], match["receiver"], match["letter"]


def _is(node: str, kind: str) -> bool:
    """Whether ``node`` is the ``input`` / ``logits`` node, at any position (``logits_4``)."""
    return node == kind or (node.startswith(kind + "_") and node[len(kind) + 1:].isdigit())


def _graph_edges(graph: Any) -> tuple[str, ...]:
    return tuple(graph.edges)


def prune_edges(edges: Collection[str]) -> frozenset[str]:
    """The edges that remain after EAP-IG's ``Graph.prune``: repeatedly drop nodes with no
    outgoing circuit edge or no incoming one (``input`` always counts as fed, ``logits`` as
    kept), and the edges of dropped nodes.

    Example:
        >>> sorted(prune_edges({"input->a0.h0<v>", "a0.h0->logits", "a0.h1->logits"}))
        ['a0.h0->logits', 'input->a0.h0<v>']
    """
    kept = set(edges)
    while True:
        ends = {e: edge_ends(e) for e in kept}
        out = {s for s, _, _ in ends.values()}
        fed = {r for _, r, _ in ends.values()} | {s for s in out if _is(s, "input")}
        alive = (out & fed) | {r for _, r, _ in ends.values() if _is(r, "logits")}
        now = {e for e, (s, r, _) in ends.items() if s in alive and r in alive}
        if now == kept:
            return frozenset(kept)
        kept = now


def _score_vector(scores: Any, graph_edges: tuple[str, ...]) -> Tensor:
    """Per-edge scores aligned with ``graph_edges``, from an ``EdgeScores``."""
    names = tuple(scores.names)
    values = scores.scores.detach().double().cpu().flatten()
    if len(names) != values.numel():
        raise ShapeError(f"EdgeScores has {len(names)} names but {values.numel()} scores")
    if names == graph_edges:
        return values
    index = {n: i for i, n in enumerate(names)}
    missing = [e for e in graph_edges if e not in index]
    if missing:
        raise InputError(f"the scores have no value for {len(missing)} edges of the graph (e.g. {missing[0]!r}); "
                         "score the same model's graph (ti.circuits.attribute) before building a circuit from it")
    return values[[index[e] for e in graph_edges]]


@dataclass(frozen=True, eq=False)
class Circuit:
    """A set of edges of ``graph`` (in the graph's order), with the nodes they imply.

    Attributes:
        edges: the circuit's edge names (MIB's), in the graph's order.
        graph: the model's graph (``ti.circuits.graph(model)``; anything with ``nodes`` and ``edges``).
        scores: optional per-edge scores over *all* the graph's edges (written to circuit
            files, drawn as edge widths); ``None`` when the circuit was given by hand.
        method: where the circuit came from (``"eap"``, ``"eap-ig-inputs"``, a file ...).

    Example:
        >>> from types import SimpleNamespace
        >>> g = SimpleNamespace(nodes=("input", "a0.h0", "logits"),
        ...                     edges=("input->a0.h0<q>", "input->a0.h0<k>", "input->a0.h0<v>", "input->logits", "a0.h0->logits"))
        >>> c = Circuit(("a0.h0->logits", "input->a0.h0<v>"), g)
        >>> c.edges, c.nodes
        (('input->a0.h0<v>', 'a0.h0->logits'), ('input', 'a0.h0', 'logits'))
    """

    edges: tuple[str, ...]
    graph: Any
    scores: Tensor | None = None
    method: str = ""

    def __post_init__(self) -> None:
        all_edges = _graph_edges(self.graph)
        position = {e: i for i, e in enumerate(all_edges)}
        unknown = [e for e in self.edges if e not in position]
        if unknown:
            close = [e for e in all_edges if e.lower() == unknown[0].lower()] or difflib.get_close_matches(
                unknown[0], all_edges, n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise InputError(f"{len(unknown)} edge(s) are not in the model's graph, e.g. {unknown[0]!r}{hint} "
                             "(edge names are MIB's: 'a2.h1->a3.h0<q>', 'a0.h3->m1', 'm3->logits', 'input->a0.h0<k>')")
        if self.scores is not None and self.scores.shape != (len(all_edges),):
            raise ShapeError(f"Circuit.scores must hold one score per graph edge ({len(all_edges)}), "
                             f"got shape {tuple(self.scores.shape)}")
        object.__setattr__(self, "edges", tuple(sorted(set(self.edges), key=position.__getitem__)))

    # -- what it contains -----------------------------------------------------------------
    @property
    def nodes(self) -> tuple[str, ...]:
        """The nodes the edges touch (senders and receivers), in the graph's order."""
        touched = set()
        for edge in self.edges:
            sender, receiver, _ = edge_ends(edge)
            touched |= {sender, receiver}
        return tuple(n for n in self.graph.nodes if n in touched)

    def __len__(self) -> int:
        return len(self.edges)

    def __iter__(self) -> Iterator[str]:
        return iter(self.edges)

    def __contains__(self, edge: object) -> bool:
        return edge in set(self.edges)

    def __repr__(self) -> str:
        shown = ", ".join(self.edges[:3]) + (", ..." if len(self.edges) > 3 else "")
        origin = f"; from {self.method}" if self.method else ""
        return f"Circuit({len(self.edges)} of {len(_graph_edges(self.graph))} edges, {len(self.nodes)} nodes{origin}: {shown})"

    def pruned(self) -> "Circuit":
        """The circuit after EAP-IG's pruning (what the reference evaluates)."""
        return Circuit(tuple(prune_edges(self.edges)), self.graph, self.scores, self.method)

    def _repr_html_(self) -> str:
        from tl_interp.viz.circuit import circuit_html

        return circuit_html(self)

    # -- building from scores ---------------------------------------------------------------
    @classmethod
    @renamed(n="k")
    def top(cls, scores: Any, k: int, *, absolute: bool = True, prune: bool = True) -> "Circuit":
        """The circuit of the ``k`` edges with the largest |score| (signed score with
        ``absolute=False``; the edges of ``scores.top(k)``), then pruned (EAP-IG's
        ``apply_topn(k, absolute)``; ties keep the graph's order).

        Args:
            scores: an ``EdgeScores`` (``ti.circuits.attribute``).
            k: how many edges to take before pruning, 0 <= k <= number of edges.
            absolute: rank by |score| (MIB's CMD) or by the signed score (MIB's CPR).
            prune: prune as the reference does (its ``evaluate_graph`` scores the pruned circuit).
        """
        graph_edges, values = cls._ranked(scores, k)
        key = values.abs() if absolute else values
        order = torch.argsort(-key, stable=True)[:k].tolist()
        edges = tuple(graph_edges[i] for i in order)
        circuit = cls(edges, scores.graph, values.float(), getattr(scores, "method", ""))
        return circuit.pruned() if prune else circuit

    @classmethod
    @renamed(n="k")
    def greedy(cls, scores: Any, k: int, *, absolute: bool = True, prune: bool = True) -> "Circuit":
        """Grow from ``logits`` up: take the best edge whose receiver is already in the
        circuit, add its sender, repeat ``k`` times (EAP-IG's ``apply_greedy``), then prune.

        Every edge taken leads to the logits; after pruning every edge also has a path from
        ``input``, so the circuit is connected from ``input`` to ``logits``.
        """
        graph_edges, values = cls._ranked(scores, k)
        key = (values.abs() if absolute else values).tolist()
        into: dict[str, list[int]] = {}
        for i, edge in enumerate(graph_edges):
            into.setdefault(edge_ends(edge)[1], []).append(i)
        # a max-heap on the score; the edge index breaks ties in the graph's order
        logits = [node for node in into if _is(node, "logits")]
        heap = [(-key[i], i) for node in logits for i in into[node]]
        heapq.heapify(heap)
        present, taken = set(logits), []
        while len(taken) < k and heap:
            _, i = heapq.heappop(heap)
            taken.append(i)
            sender = edge_ends(graph_edges[i])[0]
            if sender not in present:
                present.add(sender)
                for j in into.get(sender, []):
                    heapq.heappush(heap, (-key[j], j))
        circuit = cls(tuple(graph_edges[i] for i in taken), scores.graph, values.float(), getattr(scores, "method", ""))
        return circuit.pruned() if prune else circuit

    @staticmethod
    def _ranked(scores: Any, k: int) -> tuple[tuple[str, ...], Tensor]:
        graph_edges = _graph_edges(scores.graph)
        check_count(k, "k", low=0, high=len(graph_edges), what="Circuit.top / Circuit.greedy")
        return graph_edges, _score_vector(scores, graph_edges)

    # -- MIB circuit files -------------------------------------------------------------------
    def to_json(self, path: str | os.PathLike[str] | None = None, *, d_model: int | None = None) -> dict[str, Any]:
        """The circuit in MIB's circuit-file format; written to ``path`` when given.

        Every edge of the graph appears under its MIB name with its score (0.0 without
        scores) and ``in_graph``; nodes are in the graph when an edge of the circuit touches
        them (``logits`` always, as in MIB). ``cfg`` carries what MIB's loader reads:
        ``n_layers``, ``n_heads``, ``parallel_attn_mlp`` and ``d_model`` (from the graph when
        it records it, else pass ``d_model=``).

        Example:
            >>> from types import SimpleNamespace
            >>> g = SimpleNamespace(nodes=("input", "a0.h0", "logits"),
            ...                     edges=("input->a0.h0<q>", "input->a0.h0<k>", "input->a0.h0<v>", "input->logits", "a0.h0->logits"))
            >>> d = Circuit(("input->logits",), g).to_json(d_model=8)
            >>> d["edges"]["input->logits"], d["cfg"]["n_heads"]
            ({'score': 0.0, 'in_graph': True}, 1)
        """
        graph_edges = _graph_edges(self.graph)
        chosen = set(self.edges)
        nodes = set(self.nodes) | {n for n in self.graph.nodes if _is(n, "logits")}
        scores = self.scores.tolist() if self.scores is not None else [0.0] * len(graph_edges)
        data = {"cfg": _mib_cfg(self.graph, d_model),
                "nodes": {n: {"in_graph": n in nodes} for n in self.graph.nodes},
                "edges": {e: {"score": float(s), "in_graph": e in chosen} for e, s in zip(graph_edges, scores)}}
        if getattr(self.graph, "n_pos", None) is not None:  # the reference's positional graph files carry it
            data["n_pos"] = self.graph.n_pos
        if path is not None:
            from tl_interp._io import atomic_file

            with atomic_file(path) as tmp:
                Path(tmp).write_text(json.dumps(data), encoding="utf-8")
        return data

    @classmethod
    @checked
    def from_json(cls, source: str | os.PathLike[str] | Mapping[str, Any], graph: Any) -> "Circuit":
        """Read an MIB circuit file (a path or the parsed dict) for the model whose ``graph`` is given.

        The edges with ``in_graph`` true form the circuit; the scores come back when every
        edge has one. Edge names must be the graph's (a typo gets a suggestion); ``cfg``
        must agree with the graph's layers and heads.
        """
        where = "the circuit dict" if isinstance(source, Mapping) else repr(str(source))
        if isinstance(source, Mapping):
            data = source
        else:
            try:
                data = json.loads(Path(source).read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                raise ArtifactError(f"cannot read the circuit file {where}: {err}; write it with Circuit.to_json") from err
        if not isinstance(data, Mapping) or not isinstance(data.get("edges"), Mapping):
            raise ArtifactError(f"{where} is not an MIB circuit file: it needs an 'edges' object mapping edge names "
                                "to {'score': float, 'in_graph': bool}")
        expected = _mib_cfg(graph, None, need_d_model=False)
        cfg = data.get("cfg", {}) or {}
        for key in ("n_layers", "n_heads", "parallel_attn_mlp"):  # a parallel block's edges are a subset: check it
            if key in cfg and cfg[key] != expected[key]:
                raise InputError(f"{where} is for a model with {key}={cfg[key]}, this graph has {key}={expected[key]}; "
                                 "load it with the graph of the model it was made for")
        if data.get("n_pos") != getattr(graph, "n_pos", None):
            raise InputError(f"{where} has n_pos={data.get('n_pos')} (edges per position when set), the graph "
                             f"n_pos={getattr(graph, 'n_pos', None)}; load it with the graph it was made for "
                             "(EdgeScores.graph of the scores it came from)")
        edges_data = data["edges"]
        graph_edges = _graph_edges(graph)
        chosen = tuple(e for e, info in edges_data.items() if bool(info.get("in_graph", False)))
        scores = None
        if all("score" in edges_data.get(e, {}) for e in graph_edges):
            scores = torch.tensor([float(edges_data[e]["score"]) for e in graph_edges], dtype=torch.float32)
        return cls(chosen, graph, scores, "json")


def _mib_cfg(graph: Any, d_model: int | None, *, need_d_model: bool = True) -> dict[str, Any]:
    heads = [tuple(map(int, m.groups())) for m in map(_HEAD.match, graph.nodes) if m]
    mlps = [int(m.group(1)) for m in map(_MLP.match, graph.nodes) if m]
    layers = max([h[0] for h in heads] + mlps, default=-1) + 1
    cfg: dict[str, Any] = {"n_layers": getattr(graph, "n_layers", layers),
                           "n_heads": getattr(graph, "n_heads", max((h[1] for h in heads), default=-1) + 1),
                           "parallel_attn_mlp": bool(getattr(graph, "parallel", False))}
    d_model = d_model if d_model is not None else getattr(graph, "d_model", None)
    if d_model is None and hasattr(graph, "cfg"):
        d_model = getattr(graph.cfg, "d_model", None) if not isinstance(graph.cfg, Mapping) else graph.cfg.get("d_model")
    if d_model is None and need_d_model:
        raise OptionError("MIB's circuit files record the model's d_model (its loader sizes neuron masks with it), "
                          "which the graph does not know: pass to_json(..., d_model=model.cfg.d_model)")
    if d_model is not None:
        cfg["d_model"] = int(d_model)
    return cfg
