"""Steering studies, as ``ti.steering``: build vectors, apply them, evaluate them with controls.

- Vectors: ``contrast_vector`` (mean difference), ``pca_vector`` (first principal direction
  of paired differences), their per-site forms ``contrast_vectors``/``pca_vectors`` (e.g.
  one per layer), ``sae_contrast_vector`` (mean difference of SAE features), all returning a
  ``SteeringVector`` that remembers where and how it was read and saves/loads.
- SAE space: ``decompose`` (a residual vector's top SAE decoder directions and the part the
  SAE cannot explain; ablate or keep features; move it into feature space).
- Application: ``SteeringVector.intervention(scale, positions)``, ``next_token_logits``
  and ``generate``, batched over prompts, vectors and scales.
- Evaluation: ``evaluate(model, tasks, vectors, scales)`` with ``Controls`` (random
  vectors, unsteered, unrelated prompts, held-out prompts) returning a ``SteeringReport``.

Example:
    >>> import tl_interp as ti
    >>> model = ti.models.load("ordinal-4l")
    >>> v = ti.steering.contrast_vector(model, ["one , two ,", "two , three ,"],
    ...                                 ["january , february ,", "february , march ,"],
    ...                                 ti.site("resid_pre", 2), name="numbers - months")
    >>> v  # doctest: +ELLIPSIS
    SteeringVector('numbers - months': mean_diff, residual space, norm ..., at blocks.2.hook_resid_pre, read at last)
"""

from tl_interp.steering._apply import generate, next_token_logits
from tl_interp.steering._build import (
    contrast_vector,
    contrast_vectors,
    pca_vector,
    pca_vectors,
    read_activations,
    sae_contrast_vector,
)
from tl_interp.steering._decompose import Decomposition, decompose
from tl_interp.steering._evaluate import Controls, answer_token, evaluate
from tl_interp.steering._report import SteeringReport
from tl_interp.steering._vector import From, PositionRule, SteeringVector, steer_positions

__all__ = [
    "SteeringVector",
    "From",
    "PositionRule",
    "steer_positions",
    "read_activations",
    "contrast_vector",
    "contrast_vectors",
    "pca_vector",
    "pca_vectors",
    "sae_contrast_vector",
    "decompose",
    "Decomposition",
    "next_token_logits",
    "generate",
    "evaluate",
    "Controls",
    "answer_token",
    "SteeringReport",
]
