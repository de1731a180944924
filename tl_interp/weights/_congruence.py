"""Congruence: how strongly each MLP neuron's weights line up with each token's (un)embedding.

The output congruence of neuron i with token t is ``(W_out[i] @ W_U)[t]``: the direct effect on
token t's logit of one unit of the neuron's activation (a neuron's "direct logit attribution"
per unit activation). The input congruence is ``(W_E @ W_in)[t, i]``: how much token t's
embedding, read directly through ``ln2``, drives the neuron. Both are read through ``fold``
(layer norm folded the way TransformerLens processes weights), and the result says whether
the model's weights were processed.

``W_U`` is read centred over the vocabulary, as TransformerLens's ``center_unembed`` leaves it
(also for a model loaded unprocessed): each neuron's row of output congruence has mean zero,
which shifts the uncentred row by a constant and leaves rankings of tokens per neuron
(``top``) and logit differences unchanged.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tl_interp._checks import checked, retired
from tl_interp.results._ranking import Ranking, check_k
from tl_interp.errors import OptionError
from tl_interp._checks import checked
from tl_interp.errors import OptionError, SelectionError
from tl_interp.models._adapter import adapt
from tl_interp.results import Provenance, Result, register_result
from tl_interp.weights._fold import fold, token_labels
from tl_interp.weights._topk import TopK, _top_k
from tl_interp.weights._vectors import kurtosis

__all__ = ["Congruence", "congruence"]

_KINDS = {"out": "W_out[{l}] @ W_U", "in": "(W_E @ W_in[{l}]).T", "gate": "(W_E @ W_gate[{l}]).T"}


@register_result
@dataclass(frozen=True, eq=False, repr=False)
class Congruence(Result):
    """Per neuron, per token congruence ``(d_mlp, d_vocab)`` of one layer's MLP, float64."""

    kind = "congruence"

    def top(self, k: int | None = None, *, neurons: Sequence[int | str] | None = None, per: str | None = "d_mlp",
            absolute: bool = True, largest: bool = True) -> Ranking:
        """Per neuron, the ``k`` tokens of largest |congruence| (``Result.top``'s options:
        ``absolute=False`` for the tokens it promotes most, with ``largest=False`` those it
        suppresses most); ``per=None`` ranks every (neuron, token) pair together.

        Args:
            neurons: only these neurons (indices or labels such as ``"L3N17"``), in this order.

        Example:
            >>> import torch
            >>> from tl_interp.results import Provenance
            >>> c = Congruence(torch.tensor([[0.5, -2.0, 1.0]]), ("d_mlp", "d_vocab"), "out", Provenance("m"),
            ...                labels={"d_mlp": ("L0N0",), "d_vocab": ("a", "b", "c")})
            >>> c.top(2), c.top(1, absolute=False).labels
            (Ranking(by |value|, largest first: L0N0: b -2, L0N0: c +1), ('c',))
        """
        if per != "d_mlp":
            if neurons is not None:
                raise OptionError("Congruence.top: neurons= chooses rows of the per-neuron ranking; with per="
                                  f"{per!r} select them from .values instead")
            return super().top(k, per=per, absolute=absolute, largest=largest)
        rows = list(range(self.values.shape[0])) if neurons is None else self._rows(neurons)
        k = check_k(k, "Congruence.top", self.values.shape[1])
        return Ranking.per_row(self.values[rows], [self.labels["d_mlp"][r] for r in rows], self.labels["d_vocab"], k,
                               absolute=absolute, largest=largest, value_name="congruence")

    @retired("top(k, absolute=False)")
    def top_k(self, k: int = 10, *, neurons: Sequence[int | str] | None = None, largest: bool = True) -> TopK:
        """The ``k`` tokens with the largest (``largest=False``: smallest) congruence per neuron (retired: ``top``)."""
        rows = None if neurons is None else self._rows(neurons)
        return _top_k(self.values, k, row_labels=self.labels["d_mlp"], column_labels=self.labels["d_vocab"],
                      rows=rows, largest=largest)

    def _headline(self) -> str:
        product = self.provenance.settings.get("product", self.metric)
        cells = ", ".join(f"{where} {value:+.3g}" for where, value in self._top_cells(3))
        return f"{product}; largest |congruence|: {cells}"

    def _summary_lines(self) -> list[str]:
        kurt = self.kurtosis()
        order = torch.nan_to_num(kurt, nan=-float("inf")).argsort(descending=True)[:5].tolist()
        lines = [f"{'product':>24}: {self.provenance.settings.get('product', self.metric)}",
                 "the 10 (neuron, token) pairs of largest |congruence|:"]
        lines += [f"{where:>24}: {value:+.4g}" for where, value in self._top_cells(10)]
        lines.append("most token-specific neurons (excess kurtosis over the vocabulary): "
                     + ", ".join(f"{self.labels['d_mlp'][i]} {float(kurt[i]):.3g}" for i in order))
        return lines

    def kurtosis(self) -> Tensor:
        """Excess kurtosis of each neuron's congruence over the vocabulary ``(d_mlp,)``."""
        return kurtosis(self.values, dim=1)

    def _rows(self, neurons: Sequence[int | str]) -> list[int]:
        where = {label: i for i, label in enumerate(self.labels["d_mlp"])}
        rows = []
        for n in neurons:
            if isinstance(n, str) and n not in where:
                raise SelectionError(f"no neuron {n!r}; neurons are labelled like {self.labels['d_mlp'][0]!r}")
            rows.append(where[n] if isinstance(n, str) else int(n))
        return rows


def _subset(items: Sequence[int] | Tensor | None, size: int, what: str) -> Tensor | None:
    if items is None:
        return None
    index = torch.as_tensor(items, dtype=torch.long).flatten()
    if index.numel() == 0 or bool(((index < 0) | (index >= size)).any()):
        raise SelectionError(f"{what} must be non-empty indices in [0, {size}); got {index.tolist()[:8]}")
    return index


@checked
def congruence(model: Any, layer: int, *, kind: str = "out", token_ids: Sequence[int] | Tensor | None = None,
               neurons: Sequence[int] | Tensor | None = None) -> Congruence:
    """Congruence of one layer's MLP neurons with the unembedding (``"out"``) or embedding (``"in"``).

    Args:
        model: a HookedTransformer (processed or not: the weights are read with layer norm folded).
        layer: the block whose MLP is read.
        kind: ``"out"`` (``W_out @ W_U``), ``"in"`` (``(W_E @ W_in).T``) or, on gated MLPs,
            ``"gate"`` (``(W_E @ W_gate).T``).
        token_ids: restrict the token axis to these ids (default: the whole vocabulary).
        neurons: restrict the neuron axis to these neurons (a full ``(d_mlp, d_vocab)`` float64
            table of a large model is big: read it in chunks of neurons).

    Returns:
        ``Congruence`` with values ``(d_mlp, n_tokens)``, axes ``("d_mlp", "d_vocab")``, neuron
        and token labels; provenance settings record ``weights_processed``.

    Example:
        >>> from transformer_lens import HookedTransformer, HookedTransformerConfig
        >>> cfg = HookedTransformerConfig(n_layers=1, d_model=8, n_heads=2, d_head=4, n_ctx=4,
        ...                               d_vocab=5, act_fn="relu", d_mlp=16)
        >>> c = congruence(HookedTransformer(cfg), 0)
        >>> tuple(c.values.shape), c.provenance.settings["weights_processed"]
        ((16, 5), False)
    """
    if kind not in _KINDS:
        raise OptionError(f"kind={kind!r}; choose 'out' (with the unembedding), 'in' or 'gate' (with the embedding)")
    fw = fold(model)
    ids = _subset(token_ids, model.cfg.d_vocab, "token_ids")
    rows = _subset(neurons, model.cfg.d_mlp, "neurons")
    if kind == "out":
        unembed, w_out = fw.unembed(), fw.mlp_out(layer)
        values = (w_out if rows is None else w_out[rows]) @ (unembed if ids is None else unembed[:, ids])
    else:
        w_in = fw.mlp_in(layer, gate=kind == "gate")
        embed = fw.embed()
        values = ((embed if ids is None else embed[ids]) @ (w_in if rows is None else w_in[:, rows])).T
    chosen = range(values.shape[0]) if rows is None else rows.tolist()
    labels = {"d_mlp": tuple(f"L{layer}N{i}" for i in chosen),
              "d_vocab": token_labels(model, ids)}
    prov = Provenance.make(adapt(model).model_id, settings={**fw.settings(), "layer": layer, "kind": kind,
                                                            "product": _KINDS[kind].format(l=layer)})
    return Congruence(values.cpu(), ("d_mlp", "d_vocab"), f"congruence_{kind}", prov, labels)
