"""Senders and receivers of path patching: how they are written, checked and labelled.

A *sender* is a head ``(layer, head)`` (or ``"L3H1"``), an MLP ``("mlp", layer)`` (or
``"MLP3"``), or a set of them patched together. A *receiver* is one input of a component: a
head's query, key or value input ``(layer, head, "q")`` (``"qk"``, ``"qkv"``... name several
at once; or ``"L3H1.q"``), an MLP's input ``("mlp", layer)``, or ``"logits"`` (the residual
stream into the final norm and unembedding). Every check here runs before a forward pass.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tl_interp.errors import OptionError, SelectionError, UnsupportedError

__all__ = ["Node", "parse_senders", "parse_receivers", "reaches", "group_label"]

_HEAD = re.compile(r"^L(\d+)H(\d+)(?:\.([qkv]+))?$")
_MLP = re.compile(r"^MLP(\d+)$", re.IGNORECASE)
_SENDER_FORMS = "a head (layer, head) or 'L3H1', an MLP ('mlp', layer) or 'MLP3', or a set of them"
_RECEIVER_FORMS = ("a head input (layer, head, 'q' | 'k' | 'v' | 'qkv') or 'L3H1.q', an MLP input ('mlp', layer) "
                   "or 'MLP3', 'logits', or a set of them")


@dataclass(frozen=True, order=True)
class Node:
    """One component (a sender) or one component input (a receiver).

    ``kind`` is ``"head"``, ``"mlp"`` or ``"logits"``; ``input`` is ``"q"``/``"k"``/``"v"`` for
    a head receiver and ``""`` otherwise."""

    layer: int
    kind: str
    head: int = -1
    input: str = ""

    def __str__(self) -> str:
        if self.kind == "head":
            return f"L{self.layer}H{self.head}" + (f".{self.input}" if self.input else "")
        return "logits" if self.kind == "logits" else f"MLP{self.layer}"


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _one(item: Any, receiver: bool, cfg: Any) -> list[Node]:
    """The nodes one written item stands for (several for a head input like ``'qkv'``)."""
    forms = _RECEIVER_FORMS if receiver else _SENDER_FORMS
    what = "receiver" if receiver else "sender"
    nodes: list[Node]
    if isinstance(item, str):
        if item == "logits" and receiver:
            return [Node(cfg.n_layers, "logits")]
        head, mlp = _HEAD.match(item), _MLP.match(item)
        if head:
            item = (int(head.group(1)), int(head.group(2)), *([head.group(3)] if head.group(3) else []))
        elif mlp:
            item = ("mlp", int(mlp.group(1)))
        else:
            raise OptionError(f"{what} {item!r} is not understood; give {forms}")
    if not isinstance(item, tuple):
        raise OptionError(f"{what} {item!r} is not understood; give {forms}")
    if len(item) == 2 and isinstance(item[0], str) and item[0].lower() == "mlp" and _is_int(item[1]):
        nodes = [Node(item[1], "mlp")]
    elif len(item) == 2 and _is_int(item[0]) and _is_int(item[1]):
        if receiver:
            raise OptionError(f"receiver {item!r} is a head; say which of its inputs receives: "
                              f"({item[0]}, {item[1]}, 'q'), 'k', 'v' or 'qkv'")
        nodes = [Node(item[0], "head", item[1])]
    elif (len(item) == 3 and receiver and _is_int(item[0]) and _is_int(item[1]) and isinstance(item[2], str)
          and item[2] and set(item[2]) <= set("qkv")):
        nodes = [Node(item[0], "head", item[1], letter) for letter in dict.fromkeys(item[2])]
    else:
        raise OptionError(f"{what} {item!r} is not understood; give {forms}")
    for node in nodes:
        _check_node(node, what, cfg)
    return nodes


def _check_node(node: Node, what: str, cfg: Any) -> None:
    if not 0 <= node.layer < cfg.n_layers:
        raise SelectionError(f"{what} {node}: layer {node.layer} is out of range; the model has layers "
                             f"0..{cfg.n_layers - 1}")
    if node.kind == "head" and not 0 <= node.head < cfg.n_heads:
        raise SelectionError(f"{what} {node}: head {node.head} is out of range; layer {node.layer} has heads "
                             f"0..{cfg.n_heads - 1}")
    if node.kind == "mlp" and getattr(cfg, "attn_only", False):
        raise UnsupportedError(f"{what} {node}: the model is attention-only (cfg.attn_only=True), it has no MLP; "
                               "use heads or 'logits'")


def _items(spec: Any, receiver: bool) -> list[Any]:
    """The rows (senders) or columns (receiver sets) of a study: a single entry, or a list."""
    if isinstance(spec, (str, tuple, set, frozenset)):
        return [spec]
    if isinstance(spec, Iterable):
        items = list(spec)
        if not items:
            raise OptionError(f"{'receivers' if receiver else 'senders'} is empty; give at least one")
        return items
    raise OptionError(f"{'receivers' if receiver else 'senders'}={spec!r} is not understood; give "
                      f"{_RECEIVER_FORMS if receiver else _SENDER_FORMS}, or a list of them")


def _groups(spec: Any, receiver: bool, cfg: Any) -> list[tuple[Node, ...]]:
    out = []
    for entry in _items(spec, receiver):
        members = entry if isinstance(entry, (set, frozenset)) else [entry]
        if not members:
            raise OptionError(f"an empty set of {'receivers' if receiver else 'senders'}; give at least one")
        out.append(tuple(sorted({n for m in members for n in _one(m, receiver, cfg)})))
    return out


def parse_senders(spec: Any, cfg: Any) -> list[tuple[Node, ...]]:
    """One tuple of sender nodes per row of the study."""
    return _groups(spec, False, cfg)


def parse_receivers(spec: Any, cfg: Any) -> list[tuple[Node, ...]]:
    """One tuple of receiver nodes per column of the study."""
    return _groups(spec, True, cfg)


def reaches(sender: Node, receiver: Node, parallel: bool) -> bool:
    """Whether ``sender`` writes into the residual stream before ``receiver`` reads it."""
    if receiver.kind == "logits":
        return True
    if receiver.kind == "head":
        return sender.layer < receiver.layer
    # an MLP reads resid_mid: after its own layer's heads, unless attention and MLP run in parallel
    if sender.kind == "head" and not parallel:
        return sender.layer <= receiver.layer
    return sender.layer < receiver.layer


def group_label(nodes: tuple[Node, ...]) -> str:
    """``L1H2`` for one node, ``L1H2+L1H3`` for a set."""
    return "+".join(str(n) for n in nodes)
