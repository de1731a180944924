"""How much of a model's logits hypothesised logit forms explain, and their best weighting (seed 001).

A *form* is a hypothesised logit tensor ``T (n_inputs, n_classes)``: for a network computing
group composition through a representation rho, the trace form
``T(x, y; z) = tr rho(x y z^-1) = chi_rho(x y z^-1)`` (Chughtai, Chan & Nanda 2023). Logits only
matter up to a constant per input, so every logit row and form row is centred over classes.

- ``logit_fraction(logits, forms)``: per form, the share of the centred logits' squared norm
  along that form, input by input (``fraction``: pooled over inputs, sum_i <L_i, T_i>^2 /
  ||T_i||^2 / sum_i ||L_i||^2; ``mean_fraction``: the mean of the per-input cos^2, the seed's
  number), the mean cosine, and one least-squares weight per form for all inputs with the
  share that combination explains (``fitted_fraction``).
- ``optimal_weights(forms, labels)``: the weights on the simplex (w >= 0, sum w = 1) whose
  combination sum_r w_r T_r has the lowest cross-entropy on the labels. The sum is fixed
  because scaling any form that ranks the answer first drives the loss to 0. Cross-entropy is
  convex in the logits and the logits are linear in w, so the optimum is global (SLSQP).
"""

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import scipy.optimize
import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_interp._checks import checked
from tl_interp.errors import InputError, OptionError, ShapeError
from tl_interp.stats._inputs import check_finite

__all__ = ["LogitForms", "logit_fraction", "FormWeights", "optimal_weights"]


def _centred_forms(forms: Mapping[str, Tensor], shape: tuple[int, ...] | None, what: str) -> tuple[tuple[str, ...], Tensor]:
    if not forms:
        raise OptionError(f"{what}: forms is empty; give name -> (n_inputs, n_classes) hypothesised logits")
    names = tuple(forms)
    out = []
    for name in names:
        t = check_finite(forms[name].detach().double().cpu(), f"{what}: forms[{name!r}]", "fix the form")
        if t.ndim != 2 or (shape is not None and tuple(t.shape) != shape):
            raise ShapeError(f"{what}: forms[{name!r}] has shape {tuple(t.shape)}; every form must be (n_inputs, "
                             f"n_classes){f' = {shape}, as the logits' if shape else ''}")
        shape = tuple(t.shape)
        t = t - t.mean(1, keepdim=True)
        flat = (t.abs().amax(1) == 0).nonzero().flatten()
        if flat.numel():
            raise InputError(f"{what}: forms[{name!r}] is constant over the classes on inputs {flat[:10].tolist()} "
                             "(e.g. the trivial representation's trace); logits ignore a constant, so it explains "
                             "nothing there. Leave it out")
        out.append(t)
    return names, torch.stack(out)


@dataclass(frozen=True)
class LogitForms:
    """How much of the logits each form explains (see ``logit_fraction``); one entry per form."""

    names: tuple[str, ...]
    fraction: Tensor
    mean_fraction: Tensor
    mean_cosine: Tensor
    weights: Tensor
    fitted_fraction: float

    def summary(self) -> str:
        """One line per form, then the least-squares combination."""
        lines = [f"{n:>14}: fraction {float(f):.4f} (per-input mean {float(m):.4f}), mean cosine {float(c):.4f}, "
                 f"weight {float(w):.4g}" for n, f, m, c, w in
                 zip(self.names, self.fraction, self.mean_fraction, self.mean_cosine, self.weights)]
        return "\n".join(lines + [f"least-squares combination of all forms explains {self.fitted_fraction:.4f}"])

    def __repr__(self) -> str:
        body = ", ".join(f"{n} {float(f):.3f}" for n, f in zip(self.names, self.fraction))
        return f"LogitForms(fraction of centred logits: {body}; combined fit {self.fitted_fraction:.3f})"


@checked
def logit_fraction(logits: Float[Tensor, "n_inputs n_classes"], forms: Mapping[str, Tensor]) -> LogitForms:
    """The share of the (class-centred) logits each hypothesised form explains, and their least-squares fit.

    Args:
        logits: the model's logits over all inputs.
        forms: name -> ``(n_inputs, n_classes)`` hypothesised logits (e.g. trace forms).

    Returns:
        ``LogitForms`` with ``fraction``, ``mean_fraction``, ``mean_cosine``, ``weights`` and
        ``fitted_fraction`` (forms that are orthogonal input by input have fractions that add up).

    Example:
        >>> import torch
        >>> T = torch.tensor([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]])
        >>> res = logit_fraction(3 * T + 5, {"T": T})
        >>> round(float(res.fraction[0]), 6), round(float(res.weights[0]), 6), round(res.fitted_fraction, 6)
        (1.0, 3.0, 1.0)
    """
    L = check_finite(logits.detach().double().cpu(), "logit_fraction: logits", "fix the logits first")
    L = L - L.mean(1, keepdim=True)
    total = (L ** 2).sum()
    if not bool(total > 0):
        raise InputError("logit_fraction: the logits are constant over the classes on every input; nothing to explain")
    names, T = _centred_forms(forms, tuple(L.shape), "logit_fraction")
    dots = (T * L).sum(-1)  # (forms, inputs)
    t_norms = (T ** 2).sum(-1)
    l_norms = (L ** 2).sum(-1)
    along = dots ** 2 / t_norms
    live = l_norms > 0
    gram = torch.einsum("rnc,snc->rs", T, T)
    weights = torch.linalg.lstsq(gram, dots.sum(1, keepdim=True)).solution.flatten()
    residual = ((L - torch.einsum("r,rnc->nc", weights, T)) ** 2).sum()
    return LogitForms(names=names, fraction=along.sum(1) / total,
                      mean_fraction=(along[:, live] / l_norms[live]).mean(1),
                      mean_cosine=(dots[:, live] / (t_norms[:, live] * l_norms[live]).sqrt()).mean(1),
                      weights=weights, fitted_fraction=float(1 - residual / total))


@dataclass(frozen=True)
class FormWeights:
    """The simplex weights of the forms with the lowest cross-entropy, and each form's own loss."""

    names: tuple[str, ...]
    weights: Tensor
    loss: float
    accuracy: float
    single_loss: Tensor
    single_accuracy: Tensor

    def summary(self) -> str:
        """Each form's weight and its loss alone, then the combination's loss and accuracy."""
        lines = [f"{n:>14}: weight {float(w):.4f}  (alone: loss {float(l):.4f}, accuracy {float(a):.4f})"
                 for n, w, l, a in zip(self.names, self.weights, self.single_loss, self.single_accuracy)]
        return "\n".join(lines + [f"combination: loss {self.loss:.4f}, accuracy {self.accuracy:.4f}"])

    def __repr__(self) -> str:
        body = ", ".join(f"{n} {float(w):.3f}" for n, w in zip(self.names, self.weights))
        return f"FormWeights({body}; loss {self.loss:.4f})"


def _cross_entropy(T: Tensor, labels: Tensor, w: np.ndarray) -> tuple[float, np.ndarray]:
    logits = torch.einsum("r,rnc->nc", torch.as_tensor(w, dtype=torch.float64), T)
    logp = logits.log_softmax(-1)
    n = labels.numel()
    loss = -logp[torch.arange(n), labels].mean()
    p = logp.exp()
    p[torch.arange(n), labels] -= 1
    grad = torch.einsum("nc,rnc->r", p, T) / n
    return float(loss), grad.numpy()


@checked
def optimal_weights(forms: Mapping[str, Tensor], labels: Int[Tensor, " n_inputs"]) -> FormWeights:
    """The weights w >= 0, sum w = 1, minimising the cross-entropy of sum_r w_r T_r on ``labels``.

    Args:
        forms: name -> ``(n_inputs, n_classes)`` hypothesised logits (centred over classes here).
        labels: the correct class of each input.

    Returns:
        ``FormWeights``: ``weights``, the combination's ``loss`` and ``accuracy``, and each form's
        own loss and accuracy (weight 1 on it).

    Example:
        >>> import torch
        >>> right = torch.tensor([[2.0, 0.0], [0.0, 2.0]]); wrong = torch.tensor([[0.0, 2.0], [2.0, 0.0]])
        >>> res = optimal_weights({"right": right, "wrong": wrong}, torch.tensor([0, 1]))
        >>> [round(float(w), 3) for w in res.weights]
        [1.0, 0.0]
    """
    names, T = _centred_forms(forms, None, "optimal_weights")
    y = labels.detach().cpu().long()
    if y.numel() != T.shape[1] or (y.numel() and (y.min() < 0 or y.max() >= T.shape[2])):
        raise ShapeError(f"optimal_weights: labels must be {T.shape[1]} class indices in [0, {T.shape[2] - 1}] (one "
                         f"per input row of the forms), got {y.numel()} in [{int(y.min())}, {int(y.max())}]")
    r = len(names)
    single = [_cross_entropy(T, y, np.eye(r)[i])[0] for i in range(r)]
    start = np.eye(r)[int(np.argmin(single))]
    fit = scipy.optimize.minimize(lambda w: _cross_entropy(T, y, w), start, jac=True, method="SLSQP",
                                  bounds=[(0.0, 1.0)] * r,
                                  constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1, "jac": lambda w: np.ones(r)}],
                                  options={"ftol": 1e-12, "maxiter": 500})
    if not fit.success:
        raise InputError(f"optimal_weights: the optimiser did not converge ({fit.message}); check the forms' scale")
    w = torch.as_tensor(np.clip(fit.x, 0.0, None), dtype=torch.float64)
    w = w / w.sum()
    combined = torch.einsum("r,rnc->nc", w, T)

    def accuracy(logits: Tensor) -> float:
        return float((logits.argmax(-1) == y).double().mean())

    return FormWeights(names=names, weights=w, loss=_cross_entropy(T, y, w.numpy())[0], accuracy=accuracy(combined),
                       single_loss=torch.tensor(single, dtype=torch.float64),
                       single_accuracy=torch.tensor([accuracy(t) for t in T], dtype=torch.float64))
