"""The results of reading the residual stream: ``LensResult`` (logit / tuned lens), ``DLAResult``."""

from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor

from tl_interp._checks import retired
from tl_interp.results._ranking import Ranking, check_k
from tl_interp.errors import OptionError
from tl_interp._checks import check_count
from tl_interp.errors import OptionError, SelectionError
from tl_interp.results import Result, register_result, short

__all__ = ["LensResult", "DLAResult"]


def _strings_meta(strings: dict[int, str]) -> dict[str, str]:
    return {str(k): v for k, v in strings.items()}


@register_result
@dataclass(frozen=True, eq=False, repr=False)
class LensResult(Result):
    """What each layer's residual stream predicts, read through the model's own head.

    ``values``: ``KL(p_final || p_layer)`` in nats, axes ``(layer, batch, pos)``; the ``pos``
    axis holds the positions read in each row (``extras["position"]`` says which, ``extras["mask"]``
    which slots are real when rows read different numbers of positions). Layer ``l < n_layers``
    is ``blocks.l.hook_resid_pre``; the last layer (label ``"final"``) is the final
    ``resid_post``, whose reading is the model's logits.

    Extras: ``entropy`` (nats), ``top_tokens`` / ``top_probs`` ``(layer, batch, pos, k)``,
    ``answer_prob`` / ``answer_rank`` ``(layer, batch, pos, n_answers)`` (rank 0 = top token)
    with ``answers`` ``(batch, n_answers)``, ``position`` / ``tokens`` / ``mask`` ``(batch, pos)``.
    ``strings`` maps every token id the result shows to its text; ``answer_labels`` names the
    answers.
    """

    kind: ClassVar[str] = "lens"

    strings: dict[int, str] = field(default_factory=dict)
    answer_labels: tuple[str, ...] = ()

    def token(self, token_id: int) -> str:
        """The text of a token id the result shows."""
        return self.strings.get(int(token_id), f"[{int(token_id)}]")

    @property
    def kl(self) -> Tensor:
        """``(layer, batch, pos)``: KL(final || layer) in nats (the values)."""
        return self.values

    @property
    def entropy(self) -> Tensor:
        """``(layer, batch, pos)``: entropy of each layer's distribution, nats."""
        return self.extras["entropy"]

    def _slot(self, row: int, pos: int | None) -> int:
        n, width = self.values.shape[1], self.values.shape[2]
        if not -n <= row < n:
            raise SelectionError(f"row {row} is out of range for {n} prompts")
        slots = self.extras["mask"][row].nonzero().flatten().tolist()
        if pos is None:
            return slots[-1]
        if not -width <= pos < width or (pos % width) not in slots:
            raise SelectionError(f"pos {pos}: row {row} read the slots {slots} of the pos axis")
        return pos % width

    def layer_table(self, row: int = 0, pos: int | None = None) -> list[dict[str, Any]]:
        """One dict per layer for one read position (default: the row's last one): top tokens
        with probabilities, KL, entropy, each answer's probability and rank."""
        slot = self._slot(row, pos)
        out = []
        for layer in range(self.values.shape[0]):
            tops = self.extras["top_tokens"][layer, row, slot].tolist()
            probs = self.extras["top_probs"][layer, row, slot].tolist()
            entry: dict[str, Any] = {"layer": self.label("layer", layer),
                                     "top": [(self.token(t), p) for t, p in zip(tops, probs)],
                                     "kl": float(self.values[layer, row, slot]),
                                     "entropy": float(self.entropy[layer, row, slot])}
            if "answer_prob" in self.extras:
                for j, name in enumerate(self.answer_labels):
                    entry[f"p({name})"] = float(self.extras["answer_prob"][layer, row, slot, j])
                    entry[f"rank({name})"] = int(self.extras["answer_rank"][layer, row, slot, j])
            out.append(entry)
        return out

    def _headline(self) -> str:
        mask = self.extras["mask"].bool()
        kl = self.values.double()[:, mask].mean(-1)  # (layer,): mean over every read position
        n_layers = kl.shape[0]
        shown = sorted({0, n_layers // 2, max(n_layers - 2, 0)})
        trail = ", ".join(f"{short(self.label('layer', i), 8)} {float(kl[i]):.3g}" for i in shown)
        first = self.layer_table(0)[-2 if n_layers > 1 else -1]
        top = first["top"][0] if first["top"] else ("?", float("nan"))
        return (f"{int(mask.sum())} read positions; mean KL(final||layer) nats: {trail}; prompt 0 at layer "
                f"{short(first['layer'], 8)} reads {short(top[0], 16)!r} p={top[1]:.2f}")

    def summary(self, row: int = 0, pos: int | None = None) -> str:
        """A plain-text table, one line per layer (see ``layer_table``)."""
        slot = self._slot(row, pos)
        at = int(self.extras["position"][row, slot])
        lines = [f"{self.metric} of prompt {row} at position {at} ({self.token(int(self.extras['tokens'][row, slot]))!r})"]
        for entry in self.layer_table(row, slot):
            top = ", ".join(f"{t!r} {p:.2f}" for t, p in entry["top"][:3])
            answers = "  ".join(f"{k}={v:.3g}" for k, v in entry.items() if k.startswith("p("))
            lines.append(f"{entry['layer']:>6}  KL {entry['kl']:7.3f}  H {entry['entropy']:6.3f}  {top}"
                         + (f"  {answers}" if answers else ""))
        return "\n".join(lines)

    def figure(self, *, kind: str = "heatmap", row: int = 0, pos: int | None = None, **kwargs: Any) -> Any:
        """``kind="heatmap"``: layer x position (one prompt) or layer x prompt (one position per
        prompt), each cell the top token and its probability; ``"trajectories"``: each answer's
        probability across layers. Plotly, imported lazily (``tl_interp.viz.lens``)."""
        from tl_interp.viz import lens as figures

        if kind == "heatmap":
            return figures.lens_heatmap(self, row=row, **kwargs)
        if kind == "trajectories":
            return figures.answer_trajectories(self, row=row, pos=pos, **kwargs)
        raise OptionError(f"figure(kind={kind!r}): choose 'heatmap' or 'trajectories'")

    def _extra_meta(self) -> dict[str, Any]:
        return {"strings": _strings_meta(self.strings), "answer_labels": list(self.answer_labels)}

    @classmethod
    def _rebuild(cls, extra_meta: dict[str, Any], **fields: Any) -> "LensResult":
        return cls(**fields, strings={int(k): v for k, v in extra_meta.get("strings", {}).items()},
                   answer_labels=tuple(extra_meta.get("answer_labels", ())))


@register_result
@dataclass(frozen=True, eq=False, repr=False)
class DLAResult(Result):
    """Direct logit attribution: each component's direct contribution to an answer's logit
    (or a logit difference), through the final norm's scale frozen at the clean run.

    ``values``: ``(component, batch)``. The components plus ``extras["constant"]`` (the final
    norm's bias and the unembedding bias, ``(batch,)``) sum to ``extras["logit"]``, the model's
    own (pre-soft-cap) logit or logit difference at the read position. What the frozen norm
    leaves out: ``extras["renormalised"]`` is each component's effect with the norm recomputed
    (``logit(resid) - logit(resid - component)``), and ``extras["centring"]`` ``(batch,)`` the
    part of the logit that LayerNorm's centring removes from the uncentred contributions (zero
    for RMSNorm). ``by`` is the decomposition (``settings["by"]``); for ``by="head"``,
    ``heads()`` gives ``(layer, head_index, batch)``.
    """

    kind: ClassVar[str] = "dla"

    @property
    def by(self) -> str:
        """The decomposition: ``"layer"``, ``"component"``, ``"head"``, ``"neuron"`` or ``"position"``."""
        return str(self.provenance.settings.get("by", ""))

    @property
    def total(self) -> Tensor:
        """``(batch,)``: the components plus the constant (equals ``extras["logit"]``)."""
        return self.values.double().sum(0).float() + self.extras["constant"]

    def heads(self) -> Tensor:
        """``(layer, head_index, batch)``: the heads' contributions (``by="head"`` only)."""
        if self.by != "head":
            raise OptionError(f"heads(): this attribution is by {self.by!r}; run it with by='head'")
        n_layers, n_heads = (int(self.provenance.settings[k]) for k in ("n_layers", "n_heads"))
        return self.values[: n_layers * n_heads].reshape(n_layers, n_heads, -1)

    def top(self, k: int | None = None, *, absolute: bool = True, largest: bool = True) -> Ranking:
        """The ``k`` components with the largest mean |contribution| over prompts
        (``Result.top``'s options), as ``(component, mean)``."""
        mean = self.values.double().mean(1)
        labels = [self.label("component", i) for i in range(mean.numel())]
        return Ranking.of(mean, labels, check_k(k, "DLAResult.top", mean.numel()), absolute=absolute, largest=largest,
                          value_name="mean contribution")

    @retired("top(k)")
    def ranking(self, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` components with the largest mean |contribution| (retired: ``top(k)``)."""
        return list(self.top(k))

    def approximation(self) -> dict[str, float]:
        """How much the frozen-norm reading leaves out, over prompts: the largest gap between a
        component's frozen and renormalised effect, the sum's error, and the centring term."""
        gap = (self.values - self.extras["renormalised"]).abs()
        err = (self.total - self.extras["logit"]).abs()
        return {"max_frozen_vs_renormalised": float(gap.max()) if gap.numel() else 0.0,
                "max_sum_error": float(err.max()), "max_abs_centring": float(self.extras["centring"].abs().max())}

    def _headline(self) -> str:
        top = ", ".join(f"{short(name)} {value:+.3g}" for name, value in self.top(min(3, self.values.shape[0])))
        return f"by {self.by}; mean logit {float(self.extras['logit'].double().mean()):.4g}; top: {top}"

    def summary(self, k: int | None = None) -> str:
        """The top ``k`` components, the logit they sum to and what the frozen norm leaves out.

        Args:
            k: how many components to list, at most as many as there are; default up to 10 (a
                printout, so the default never exceeds a small result).
        """
        n = self.values.shape[0]
        k = min(10, n) if k is None else check_k(k, "DLAResult.summary", n)
        target = self.metric
        logit = self.extras["logit"].double().mean()
        approx = self.approximation()
        lines = [f"direct logit attribution to {target} by {self.by}: mean logit {float(logit):.4g} over "
                 f"{self.values.shape[1]} prompts (constant {float(self.extras['constant'].double().mean()):.4g})"]
        lines += [f"  {name:>14}  {value:+.4g}" for name, value in self.top(k)]
        lines.append(f"sum error {approx['max_sum_error']:.2g}; frozen vs renormalised norm: up to "
                     f"{approx['max_frozen_vs_renormalised']:.3g}; centring term up to {approx['max_abs_centring']:.3g}")
        return "\n".join(lines)

    def figure(self, **kwargs: Any) -> Any:
        """Heads: a layer x head heatmap of the mean contribution; otherwise bars of the largest
        components (plotly, imported lazily; ``tl_interp.viz.lens``)."""
        from tl_interp.viz import lens as figures

        return figures.dla_figure(self, **kwargs)

    @classmethod
    def _rebuild(cls, extra_meta: dict[str, Any], **fields: Any) -> "DLAResult":
        return cls(**fields)

