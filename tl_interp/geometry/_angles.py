"""Layer-to-layer angles: how far a token's hidden vector turns from one layer to the next.

For states ``(layers + 1, batch, pos, d)`` (the residual stream before every block plus after
the last), the angle at layer l of a position is ``acos(cos(h_l, h_{l+1}))`` in degrees. It is
measured at each prompt's target token, at another token (by default the one before it), and
for a shuffled baseline: two vectors of the same prompt drawn from random layers and random
*real* positions (never padding). Per layer, paired t-tests (``ti.stats.paired_ttest``, pairs
over prompts) compare target vs other and target vs shuffled; p-values are corrected over
layers within each comparison (``ti.stats.correct``), and Cohen's d_z is the effect size.
"""

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tl_interp._checks import SIZED_BY_MEMORY, checked, renamed, retired_keywords
from tl_interp import stats
from tl_interp.engine.collect import collect
from tl_interp.engine.inputs import Inputs, as_batch
from tl_interp.errors import InputError, OptionError, SelectionError, ShapeError, TlInterpDeprecationWarning
from tl_interp.models._adapter import Tokenized, adapt
from tl_interp.positions import first
from tl_interp.results import Provenance, Result, register_result, short
from tl_interp.sites import site
from tl_interp.stats._inputs import check_finite, unit_scale

__all__ = ["LayerAngles", "layer_angles", "AngleInputs", "angle_inputs", "COMPARISONS"]

KINDS = ("target", "other", "shuffled")
COMPARISONS = ("target vs other", "target vs shuffled")
_CORRECTIONS = ("bonferroni", "holm", "fdr_bh", "none")


@register_result
@dataclass(frozen=True, eq=False, repr=False)
class LayerAngles(Result):
    """Angles in degrees ``(kind, layer, batch)`` for kinds target / other / shuffled, and the tests.

    ``.angles[kind]`` is ``(layers, batch)``; ``.p_values[comparison]`` the corrected p-values per
    layer; ``.statistics``, ``.raw_p_values``, ``.effect_sizes`` likewise.
    """

    kind = "layer_angles"

    @property
    def angles(self) -> dict[str, Tensor]:
        return {k: self.values[i] for i, k in enumerate(self.labels["kind"])}

    def _per_comparison(self, key: str) -> dict[str, Tensor]:
        return {c: self.extras[key][i] for i, c in enumerate(COMPARISONS) if key in self.extras}

    @property
    def statistics(self) -> dict[str, Tensor]:
        return self._per_comparison("t")

    @property
    def raw_p_values(self) -> dict[str, Tensor]:
        return self._per_comparison("p_raw")

    @property
    def p_values(self) -> dict[str, Tensor]:
        """Corrected over layers (``provenance.settings["correction"]``)."""
        return self._per_comparison("p")

    @property
    def effect_sizes(self) -> dict[str, Tensor]:
        """Cohen's d_z of the paired angle differences, per layer."""
        return self._per_comparison("cohens_d")

    def significant(self, alpha: float = 0.05) -> dict[str, Tensor]:
        """Which layers' corrected p-values are below ``alpha``."""
        return {c: p <= alpha for c, p in self.p_values.items()}

    def _headline(self) -> str:
        means = ", ".join(f"{k} {float(a.mean()):.1f}°" for k, a in self.angles.items())
        found = [f"{c}: {int(s.sum())}/{len(s)} layers p<=0.05" for c, s in self.significant().items()]
        return f"mean angle {means}; " + "; ".join(found)

    def _summary_lines(self) -> list[str]:
        correction = self.provenance.settings.get("correction", "?")
        lines = [f"per layer: mean angle (degrees) of each kind; per comparison the {correction}-corrected p "
                 "and Cohen's d_z"]
        angles, p, d = self.angles, self.p_values, self.effect_sizes
        for i in range(self.values.shape[1]):
            kinds = "  ".join(f"{k} {float(a[i].mean()):6.2f}" for k, a in angles.items())
            tests = "  ".join(f"{c.split(' vs ')[1]}: p={float(p[c][i]):.3g} d={float(d[c][i]):+.2f}" for c in p)
            lines.append(f"{short(self.label('layer', i), 12):>12}: {kinds}  |  {tests}")
        return lines

    def figure(self, **kwargs: Any) -> Any:
        """Mean angle per layer (with bootstrap intervals) for each kind, and the t-values."""
        from tl_interp.geometry._figures import angles_figure

        return angles_figure(self, **kwargs)


def _check_positions(name: str, positions: Tensor, batch: int, width: int, mask: Tensor) -> Tensor:
    if not isinstance(positions, Tensor) or positions.dtype.is_floating_point or positions.dtype == torch.bool:
        raise SelectionError(f"layer_angles: {name} must be an integer tensor (batch,), one position per prompt")
    if tuple(positions.shape) != (batch,):
        raise SelectionError(f"layer_angles: {name} has shape {tuple(positions.shape)}; one position per prompt is "
                             f"({batch},)")
    index = positions.detach().cpu().long()
    outside = ((index < 0) | (index >= width)).nonzero().flatten().tolist()
    if outside:
        raise SelectionError(f"layer_angles: {name} positions {index[outside].tolist()} (rows {outside}) are outside "
                             f"the {width} positions; pass {name}= explicitly")
    pads = (~mask[torch.arange(batch), index]).nonzero().flatten().tolist()
    if pads:
        raise SelectionError(f"layer_angles: {name} lands on padding in rows {pads}; choose real tokens")
    return index


def _angles(x: Tensor, y: Tensor) -> Tensor:
    """Angle in degrees between matching vectors of x and y (last axis), float64."""
    x, y = unit_scale(x, dim=-1)[0], unit_scale(y, dim=-1)[0]  # exact per vector: no overflow of the norms
    norms = x.norm(dim=-1) * y.norm(dim=-1)
    if not bool((norms > 0).all()):
        raise InputError("layer_angles: a zero vector has no direction (states with zero norm)")
    return torch.rad2deg(torch.acos(((x * y).sum(-1) / norms).clamp(-1.0, 1.0)))


def _shuffled(states: Tensor, mask: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Angles between two vectors of the same prompt at random layers and random real positions."""
    n_states, batch = states.shape[0], states.shape[1]
    n_layers = n_states - 1
    counts = mask.sum(1)
    real_first = torch.argsort((~mask).int(), dim=1, stable=True)  # each row's real positions first, in order
    draws = torch.rand(n_layers, batch, 2, generator=generator, dtype=torch.float64)
    slot = (draws * counts[None, :, None]).long().clamp(max=counts[None, :, None] - 1)
    positions = real_first[torch.arange(batch)[None, :, None], slot]
    layers = torch.randint(n_states, (n_layers, batch, 2), generator=generator)
    rows = torch.arange(batch)[None, :, None].expand_as(layers)
    picked = states[layers, rows, positions]  # (layers, batch, 2, d)
    return _angles(picked[..., 0, :], picked[..., 1, :]), layers, positions


@renamed(targets="positions", mask="attention_mask")
@checked
def layer_angles(states: Tensor, *, positions: Tensor, others: Tensor | None = None,
                 attention_mask: Tensor | None = None,
                 baseline: str | None = "shuffled", correction: str = "bonferroni", seed: int = 0,
                 model_id: str = "states", layer_labels: Sequence[str] | None = None) -> LayerAngles:
    """Angles between consecutive layers at target tokens vs other tokens vs a shuffled baseline.

    Args:
        states: ``(layers + 1, batch, pos, d)``, e.g. resid_pre of every layer plus the final
            resid_post (``angle_inputs`` builds it).
        positions: ``(batch,)`` the target position of each prompt.
        others: ``(batch,)`` the comparison position (default: the one before each target).
        attention_mask: ``(batch, pos)`` which positions are real (default: all); the shuffled baseline
            draws only from real positions.
        baseline: ``"shuffled"`` or ``None`` (no baseline, one comparison).
        correction: ``"bonferroni"``, ``"holm"``, ``"fdr_bh"`` or ``"none"``, over layers.
        seed: seed of the shuffled draws (recorded in provenance).
        model_id, layer_labels: for provenance and figures.

    Returns:
        ``LayerAngles``.

    Example:
        >>> import torch
        >>> states = torch.randn(4, 5, 6, 8, generator=torch.Generator().manual_seed(0))
        >>> res = layer_angles(states, positions=torch.tensor([2, 3, 1, 4, 5]))
        >>> res.angles["target"].shape, res.p_values["target vs other"].shape
        (torch.Size([3, 5]), torch.Size([3]))
    """
    if states.ndim != 4:
        raise ShapeError(f"layer_angles: states are (layers + 1, batch, pos, d); got shape {tuple(states.shape)}")
    n_states, batch, width, _ = states.shape
    if n_states < 2:
        raise ShapeError("layer_angles: states need at least two layers to measure an angle between them")
    if batch < 3:
        raise InputError(f"layer_angles: a paired t-test per layer needs at least 3 prompts, got {batch}")
    if correction not in _CORRECTIONS:
        raise OptionError(f"correction={correction!r}; choose one of {', '.join(_CORRECTIONS)}")
    if baseline not in ("shuffled", None):
        raise OptionError(f"baseline={baseline!r}; use 'shuffled' or None")
    if attention_mask is None:
        real = torch.ones(batch, width, dtype=torch.bool)
    elif tuple(attention_mask.shape) != (batch, width):
        raise ShapeError(f"layer_angles: attention_mask has shape {tuple(attention_mask.shape)}; the states have "
                         f"(batch, pos) = ({batch}, {width})")
    else:
        real = attention_mask.detach().cpu().bool()
    x = states.detach().double().cpu()
    check_finite(x[:, real], "layer_angles: the states at real positions", "remove or impute those prompts first")
    target = _check_positions("positions", positions, batch, width, real)
    other = _check_positions("others", target - 1 if others is None else others, batch, width, real)
    same = (other == target).nonzero().flatten().tolist()
    if same:
        raise SelectionError(f"layer_angles: others equal positions in rows {same[:10]} ({len(same)} of {batch} "
                             "prompts), so 'target vs other' would compare angles with themselves (zero differences, "
                             "no t-test); pass others= positions that differ from positions= (default: the token "
                             "before each target)")
    rows = torch.arange(batch)
    kinds = {"target": _angles(x[:-1, rows, target], x[1:, rows, target]),
             "other": _angles(x[:-1, rows, other], x[1:, rows, other])}
    extras: dict[str, Tensor] = {"targets": target, "others": other}
    if baseline == "shuffled":
        kinds["shuffled"], extras["shuffled_layers"], extras["shuffled_positions"] = _shuffled(
            x, real, torch.Generator().manual_seed(seed))
    tests = [stats.paired_ttest(kinds["target"], kinds[k]) for k in ("other", "shuffled") if k in kinds]
    p_raw = torch.stack([t.p_value for t in tests])
    corrected = p_raw if correction == "none" else torch.stack([stats.correct(p, correction) for p in p_raw])
    extras.update(t=torch.stack([t.statistic for t in tests]), p_raw=p_raw, p=corrected,
                  cohens_d=torch.stack([t.cohens_d for t in tests]),
                  mean_difference=torch.stack([t.mean_difference for t in tests]))
    labels = {"kind": tuple(kinds), "layer": tuple(layer_labels) if layer_labels else
              tuple(str(i) for i in range(n_states - 1))}
    if len(labels["layer"]) != n_states - 1:
        raise ShapeError(f"layer_angles: {len(labels['layer'])} layer labels for {n_states - 1} layer transitions")
    prov = Provenance.make(model_id, seed=seed, settings={"correction": correction, "baseline": baseline,
                                                          "test": "paired t-test over prompts, per layer"})
    return LayerAngles(torch.stack(list(kinds.values())), ("kind", "layer", "batch"), "angle_degrees", prov,
                       labels, extras)


@dataclass(frozen=True)
class AngleInputs:
    """What ``layer_angles`` needs, read from a model: states, target positions, the real-token mask."""

    states: Tensor
    positions: Tensor
    attention_mask: Tensor
    batch: Tokenized
    names: tuple[str, ...]
    model_id: str

    @property
    def targets(self) -> Tensor:
        """The old name of ``positions``."""
        warnings.warn("AngleInputs.targets is now AngleInputs.positions", TlInterpDeprecationWarning, stacklevel=2)
        return self.positions

    @property
    def mask(self) -> Tensor:
        """The old name of ``attention_mask``."""
        warnings.warn("AngleInputs.mask is now AngleInputs.attention_mask", TlInterpDeprecationWarning, stacklevel=2)
        return self.attention_mask


@retired_keywords(batch_size=SIZED_BY_MEMORY)
@checked
def angle_inputs(model: Any, inputs: Inputs, token: str | int, *, occurrence: int = 0,
                 memory_mb: float = 1024.0, progress: bool = True) -> AngleInputs:
    """States of every layer (resid_pre of each block, then the final resid_post) and target positions.

    Args:
        model: a HookedTransformer (or any model ``ti.collect`` reads).
        inputs: the sentences (any input form); every one must contain ``token``.
        token: the target token (one token, e.g. ``" her"``) or its id.
        occurrence: which occurrence in each prompt is the target (0: the first).
        memory_mb, progress: as ``ti.collect``.

    Returns:
        ``AngleInputs`` (``states`` ``(n_layers + 1, n, pos, d)``, ``positions``, ``attention_mask``).

    Example:
        >>> import tempfile
        >>> from tl_interp.models import load, make_tiny_hf_dir
        >>> model = load(make_tiny_hf_dir(tempfile.mkdtemp(), "gpt2"), device="cpu")
        >>> inputs = angle_inputs(model, ["the cat sat", "a big cat"], " cat", progress=False)
        >>> tuple(inputs.states.shape[:2]), inputs.positions.tolist()
        ((3, 2), [2, 3])
    """
    n_layers = adapt(model).n_layers
    if n_layers is None:
        raise InputError("angle_inputs: the model declares no n_layers; collect the states with ti.collect")
    names = tuple(site("resid_pre", layer) for layer in range(n_layers)) + (site("resid_post", n_layers - 1),)
    finder = first(token, occurrence=occurrence)
    batch = as_batch(model, inputs, role="inputs")
    targets = finder.resolve(model, batch.tokens.cpu(), batch.attention_mask.cpu())  # names rows without it
    states = collect(model, batch, names, positions="all", memory_mb=memory_mb, progress=progress)
    return AngleInputs(states.stack(), targets, states.read_mask, batch, names, adapt(model).model_id)

