"""The computational graph of a transformer, at the granularity of heads and MLPs, as MIB names it.

Nodes are the token embeddings (``input``), every attention head (``a{L}.h{H}``), every MLP
(``m{L}``) and the unembedding (``logits``). In a pre-norm transformer the input of every
reader is the residual stream, a sum of the outputs of the nodes before it (plus biases), so
an *edge* ``sender -> receiver`` is one summand of one reader's input: a head's query, key or
value input (``a2.h1->a3.h0<q>``), an MLP's input (``a0.h3->m1``) or the logits' input, the
final residual stream (``m3->logits``). These are the edge names of the reference EAP-IG code
(Hanna et al. 2024) and of MIB's circuit files, kept exactly.

Edges are listed receiver by receiver in the reference's matrix order: for each layer the
query inputs of heads 0..H-1, then their key inputs, then their value inputs, then the MLP
input; finally the logits. For each receiver the senders come in forward order (``input``,
then layer by layer the heads and the MLP). A receiver reads every node of an earlier layer;
an MLP also reads the heads of its own layer (not in a parallel-attention block, where both
read the block's input).
"""

import difflib
from dataclasses import dataclass, field
from typing import Any

from tl_interp._checks import checked
from tl_interp import compat
from tl_interp.errors import HookNameError, OptionError, UnsupportedError

__all__ = ["Graph", "graph", "Receiver", "at_position"]


@dataclass(frozen=True)
class Receiver:
    """One input a node reads: where it is hooked and which senders feed it.

    Attributes:
        name: ``"a3.h0<q>"``, ``"m1"`` or ``"logits"``.
        hook_name: the hook point of the input (``blocks.3.hook_q_input`` ...).
        head: the head's index along the hook point's head axis, None for MLP / logits.
        n_senders: the senders feeding it are ``senders[:n_senders]``.
        offset: the index of its first edge in ``Graph.edges``.
    """

    name: str
    hook_name: str
    head: int | None
    n_senders: int
    offset: int


@dataclass(frozen=True)
class Graph:
    """Nodes and edges of a model's graph (see the module docstring for names and order).

    Attributes:
        nodes: ``"input"``, ``"a{L}.h{H}"``, ``"m{L}"``, ``"logits"`` in topological order.
        edges: ``"sender->receiver"`` names in canonical order.
        n_layers, n_heads, mlp, parallel: the shape it was built from.
    """

    n_layers: int
    n_heads: int
    mlp: bool = True
    parallel: bool = False
    n_pos: int | None = None
    nodes: tuple[str, ...] = field(init=False)
    edges: tuple[str, ...] = field(init=False)
    receivers: tuple[Receiver, ...] = field(init=False, repr=False)
    base_edges: tuple[str, ...] = field(init=False, repr=False)
    _senders: tuple[str, ...] = field(init=False, repr=False)
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        senders, layer_start = ["input"], []
        for layer in range(self.n_layers):
            layer_start.append(len(senders))
            senders += [f"a{layer}.h{h}" for h in range(self.n_heads)]
            if self.mlp:
                senders.append(f"m{layer}")
        receivers, edges = [], []

        def add(name: str, hook: str, head: int | None, n: int) -> None:
            receivers.append(Receiver(name, hook, head, n, len(edges)))
            edges.extend(f"{s}->{name}" for s in senders[:n])

        for layer in range(self.n_layers):
            before = layer_start[layer]
            for letter in "qkv":
                for h in range(self.n_heads):
                    add(f"a{layer}.h{h}<{letter}>", f"blocks.{layer}.hook_{letter}_input", h, before)
            if self.mlp:
                add(f"m{layer}", f"blocks.{layer}.hook_mlp_in", None, before if self.parallel else before + self.n_heads)
        add("logits", f"blocks.{self.n_layers - 1}.hook_resid_post", None, len(senders))
        nodes = (*senders, "logits")
        object.__setattr__(self, "base_edges", tuple(edges))
        object.__setattr__(self, "_senders", tuple(senders))
        if self.n_pos is not None:
            if isinstance(self.n_pos, bool) or not isinstance(self.n_pos, int) or self.n_pos < 1:
                raise OptionError(f"n_pos must be a positive int (the prompts' token length), got {self.n_pos!r}")
            nodes = tuple(f"{n}_{p}" for n in nodes for p in range(self.n_pos))
            edges = [at_position(e, p) for e in edges for p in range(self.n_pos)]
        object.__setattr__(self, "nodes", nodes)
        object.__setattr__(self, "edges", tuple(edges))
        object.__setattr__(self, "receivers", tuple(receivers))
        object.__setattr__(self, "_index", {e: i for i, e in enumerate(edges)})

    @property
    def senders(self) -> tuple[str, ...]:
        """Every node with an output (all but ``logits``), in forward order, without positions."""
        return self._senders

    def __len__(self) -> int:
        return len(self.edges)

    def __repr__(self) -> str:
        return f"Graph({len(self.nodes)} nodes, {len(self.edges)} edges; n_layers={self.n_layers}, n_heads={self.n_heads})"

    def index(self, edge: str) -> int:
        """The position of ``edge`` in ``edges``.

        Raises:
            HookNameError: an unknown edge name (with the closest names).

        Example:
            >>> g = Graph(n_layers=2, n_heads=2)
            >>> g.index("input->a0.h0<q>"), g.edges[g.index("a0.h1->a1.h0<k>")]
            (0, 'a0.h1->a1.h0<k>')
        """
        try:
            return self._index[edge]
        except (KeyError, TypeError):
            pass
        same = [e for e in self.edges if e.lower() == str(edge).lower()]  # a case slip first
        close = list(dict.fromkeys(same + difflib.get_close_matches(str(edge), self.edges, n=3, cutoff=0.6)))[:3]
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else (
            "; edges look like 'a0.h3->m1', 'a2.h1->a3.h0<q>', 'input->a0.h0<k>', 'm3->logits'")
        raise HookNameError(f"no edge {edge!r} in this graph ({len(self.nodes)} nodes, n_layers={self.n_layers}, "
                            f"n_heads={self.n_heads}){hint}")

    def sender(self, edge: str) -> str:
        """The node an edge starts at (``"a0.h3"`` for ``"a0.h3->m1"``)."""
        self.index(edge)
        return edge.split("->")[0]

    def receiver(self, edge: str) -> str:
        """The node an edge ends at, without the q/k/v input (``"a3.h0"`` for ``"a2.h1->a3.h0<q>"``)."""
        self.index(edge)
        return edge.split("->")[1].split("<")[0]

    def spec(self) -> dict[str, Any]:
        """What rebuilds this graph (``Graph(**spec)``), for saved results."""
        spec = {"n_layers": self.n_layers, "n_heads": self.n_heads, "mlp": self.mlp, "parallel": self.parallel}
        return spec if self.n_pos is None else {**spec, "n_pos": self.n_pos}

    def at_positions(self, n_pos: int | None) -> "Graph":
        """The same graph with an edge per position (``n_pos`` positions), or without (None)."""
        return Graph(self.n_layers, self.n_heads, self.mlp, self.parallel, n_pos)


def at_position(edge: str, pos: int) -> str:
    """The position-aware name of ``edge`` at position ``pos``: both ends get ``_{pos}``, as in the
    reference's positional graph (``a0.h1->a1.h0<k>`` -> ``a0.h1_3->a1.h0_3<k>``).

    Example:
        >>> at_position("a0.h1->a1.h0<k>", 3), at_position("m0->logits", 0)
        ('a0.h1_3->a1.h0_3<k>', 'm0_0->logits_0')
    """
    sender, receiver = edge.split("->")
    node, _, letter = receiver.partition("<")
    return f"{sender}_{pos}->{node}_{pos}" + (f"<{letter}" if letter else "")


@checked
def graph(model: Any) -> Graph:
    """The graph of heads, MLPs, embeddings and logits of ``model``.

    Args:
        model: a HookedTransformer with a pre-norm residual stream (GPT-2, LLaMA, attention-only,
            rotary, RMSNorm, grouped-query attention, parallel attention + MLP blocks, Gemma's
            extra norms after attention / MLP outputs).

    Returns:
        The ``Graph``; its ``edges`` are MIB's edge names.

    Raises:
        UnsupportedError: the architecture has no well-defined edges (post-norm blocks, a
            TransformerBridge), said before any forward pass.

    Example:
        >>> import tl_interp as ti
        >>> from transformer_lens import HookedTransformer, HookedTransformerConfig
        >>> cfg = HookedTransformerConfig(n_layers=2, d_model=8, n_heads=2, d_head=4, n_ctx=8, d_vocab=5,
        ...                               act_fn="relu", d_mlp=16)
        >>> g = ti.circuits.graph(HookedTransformer(cfg))
        >>> g.nodes
        ('input', 'a0.h0', 'a0.h1', 'm0', 'a1.h0', 'a1.h1', 'm1', 'logits')
        >>> len(g.edges), g.edges[:2], g.edges[-1]
        (46, ('input->a0.h0<q>', 'input->a0.h1<q>'), 'm1->logits')
    """
    reason = compat.edge_graph_reason(model)
    if reason is not None:
        raise UnsupportedError(f"edges between components are not well defined for this model: {reason}")
    cfg = model.cfg
    return Graph(n_layers=cfg.n_layers, n_heads=cfg.n_heads, mlp=not cfg.attn_only,
                 parallel=bool(getattr(cfg, "parallel_attn_mlp", False)))
