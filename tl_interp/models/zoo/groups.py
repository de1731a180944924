"""The symmetric group S5 and its small real representations, as tensors.

The ``s5-mlp`` zoo model learns S5 composition; studies of it project activations onto
representation subspaces (Chughtai, Chan & Nanda 2023, "A Toy Model of Universality",
arXiv:2302.03025). This module is the ground truth those studies compare against.

Conventions (every tensor here and the model's labels follow them):

- An element is a permutation tuple ``p`` of ``(0, 1, 2, 3, 4)``, read as the map
  ``i -> p[i]``.
- Elements are indexed in lexicographic order of the tuples
  (``itertools.permutations(range(5))``), so index 0 is the identity.
- Composition is function composition, right factor first: ``(x * y)(i) = x(y(i))``.
- The natural representation sends ``e_i`` to ``e_{p(i)}``: ``P[p[i], i] = 1``. With the
  convention above, ``rho(x * y) = rho(x) @ rho(y)``.

Representations returned here are real and orthogonal (``rho(x)^T rho(x) = I``); trivial,
sign, standard and standard x sign are the irreducible ones of dimension <= 4.
"""

import itertools
import math
from functools import cache
from typing import Literal, TypeAlias

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_interp._checks import checked
from tl_interp.errors import SelectionError

__all__ = [
    "S5_ORDER",
    "RepresentationName",
    "REPRESENTATIONS",
    "elements",
    "element_index",
    "compose",
    "multiplication_table",
    "inverses",
    "identity_index",
    "signs",
    "representation",
    "character",
]

S5_ORDER = 120

RepresentationName: TypeAlias = Literal[
    "trivial", "sign", "natural", "standard", "standard_sign"
]
REPRESENTATIONS: tuple[RepresentationName, ...] = (
    "trivial",
    "sign",
    "natural",
    "standard",
    "standard_sign",
)


@cache
def elements() -> tuple[tuple[int, ...], ...]:
    """All 120 elements of S5 as permutation tuples, in the canonical (lexicographic) order.

    Returns:
        A tuple of 120 permutation tuples; ``elements()[0]`` is the identity.

    Example:
        >>> elements()[0], elements()[1]
        ((0, 1, 2, 3, 4), (0, 1, 2, 4, 3))
    """
    return tuple(itertools.permutations(range(5)))


@cache
def _index_of() -> dict[tuple[int, ...], int]:
    return {p: i for i, p in enumerate(elements())}


def element_index(perm: tuple[int, ...]) -> int:
    """The canonical index of a permutation tuple.

    Args:
        perm: a permutation of ``(0, 1, 2, 3, 4)``.

    Returns:
        Its index in ``elements()``.

    Example:
        >>> element_index((0, 1, 2, 3, 4))
        0
    """
    try:
        return _index_of()[tuple(perm)]
    except KeyError:
        raise SelectionError(
            f"{perm!r} is not an element of S5; pass a permutation of (0, 1, 2, 3, 4)"
        ) from None


def compose(x: tuple[int, ...], y: tuple[int, ...]) -> tuple[int, ...]:
    """The product ``x * y`` of two permutations: apply ``y`` first, then ``x``.

    Args:
        x: the left factor, a permutation tuple.
        y: the right factor, a permutation tuple.

    Returns:
        The permutation ``i -> x[y[i]]``.

    Example:
        >>> compose((1, 0, 2, 3, 4), (0, 2, 1, 3, 4))  # (0 1) after (1 2)
        (1, 2, 0, 3, 4)
    """
    return tuple(x[y[i]] for i in range(len(y)))


@cache
def _multiplication_table() -> Tensor:
    els = elements()
    index = _index_of()
    table = [[index[compose(x, y)] for y in els] for x in els]
    return torch.tensor(table, dtype=torch.long)


@checked
def multiplication_table() -> Int[Tensor, "120 120"]:
    """The Cayley table of S5: ``table[i, j]`` is the index of ``elements()[i] * elements()[j]``.

    Returns:
        A ``(120, 120)`` int64 tensor (a fresh copy; callers may modify it).

    Example:
        >>> int(multiplication_table()[0, 7])  # the identity times element 7
        7
    """
    return _multiplication_table().clone()


@checked
def inverses() -> Int[Tensor, "120"]:
    """The index of each element's inverse.

    Returns:
        A ``(120,)`` int64 tensor ``inv`` with ``table[i, inv[i]] == 0``.

    Example:
        >>> int(inverses()[0])
        0
    """
    return (_multiplication_table() == identity_index()).int().argmax(dim=1)


def identity_index() -> int:
    """The index of the identity permutation (0 in the canonical order).

    Returns:
        0.

    Example:
        >>> elements()[identity_index()]
        (0, 1, 2, 3, 4)
    """
    return 0


def _sign(perm: tuple[int, ...]) -> int:
    inversions = sum(1 for a, b in itertools.combinations(perm, 2) if a > b)
    return -1 if inversions % 2 else 1


@checked
def signs() -> Int[Tensor, "120"]:
    """The sign (parity) of each element: +1 for even permutations, -1 for odd ones.

    Returns:
        A ``(120,)`` int64 tensor of +-1.

    Example:
        >>> signs()[:2].tolist()
        [1, -1]
    """
    return torch.tensor([_sign(p) for p in elements()], dtype=torch.long)


@cache
def _sum_zero_basis() -> Tensor:
    """Orthonormal basis (5, 4) of the sum-zero subspace of R^5 (the Helmert basis)."""
    basis = torch.zeros(5, 4, dtype=torch.float64)
    for k in range(1, 5):
        # k-th Helmert vector: k ones, then -k at position k, normalised.
        basis[:k, k - 1] = 1.0
        basis[k, k - 1] = -float(k)
        basis[:, k - 1] /= math.sqrt(k * (k + 1))
    return basis


@cache
def _natural() -> Tensor:
    mats = torch.zeros(S5_ORDER, 5, 5, dtype=torch.float64)
    for g, perm in enumerate(elements()):
        mats[g, list(perm), list(range(5))] = 1.0
    return mats


@checked
def representation(
    name: RepresentationName, *, dtype: torch.dtype = torch.float32
) -> Float[Tensor, "120 dim dim"]:
    """The matrices ``rho(g)`` of one real orthogonal representation of S5, for every element.

    ``trivial`` (1x1, all ones), ``sign`` (1x1, the parity), ``natural`` (5x5 permutation
    matrices, ``P[p[i], i] = 1``), ``standard`` (4x4: the natural representation restricted
    to the sum-zero subspace, in the orthonormal Helmert basis ``B``: ``B^T P B``) and
    ``standard_sign`` (standard times sign). All satisfy ``rho(x*y) = rho(x) @ rho(y)``
    under the module's composition convention.

    Args:
        name: which representation.
        dtype: floating dtype of the result (computed in float64, then cast).

    Returns:
        A ``(120, dim, dim)`` tensor indexed like ``elements()``.

    Example:
        >>> representation("standard").shape
        torch.Size([120, 4, 4])
    """
    if name == "trivial":
        mats = torch.ones(S5_ORDER, 1, 1, dtype=torch.float64)
    elif name == "sign":
        mats = signs().to(torch.float64).reshape(S5_ORDER, 1, 1)
    elif name == "natural":
        mats = _natural().clone()
    else:
        basis = _sum_zero_basis()
        mats = basis.T @ _natural() @ basis
        if name == "standard_sign":
            mats = mats * signs().to(torch.float64).reshape(S5_ORDER, 1, 1)
    return mats.to(dtype)


@checked
def character(
    name: RepresentationName, *, dtype: torch.dtype = torch.float32
) -> Float[Tensor, "120"]:
    """The character ``chi(g) = trace(rho(g))`` of a representation, for every element.

    Characters of the irreducible representations are orthonormal under
    ``<chi, psi> = mean_g chi(g) psi(g)`` (they are real here), which is how one checks
    that ``natural = trivial + standard``.

    Args:
        name: which representation.
        dtype: floating dtype of the result.

    Returns:
        A ``(120,)`` tensor.

    Example:
        >>> float(character("standard")[0])
        4.0
    """
    return representation(name, dtype=torch.float64).diagonal(dim1=-2, dim2=-1).sum(-1).to(dtype)
