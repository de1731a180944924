"""The bundled zoo: small models trained by us whose mechanism is known.

A study must find the mechanism that is known to be there; these models are where that is
checked. Each entry of ``REGISTRY`` maps a name to a loader that builds the model from the
packaged safetensors in well under a second and attaches its model card as ``model.card``
(a dict: training data, seed, hyperparameters, held-out measurements). ``card(name)`` reads
the same card without building the model.

- ``induction-2l``: 2-layer attention-only HookedTransformer with redundant previous-token
  heads in layer 0 and a single induction head in layer 1, the one head whose ablation
  destroys in-context copying (which ones: ``card("induction-2l")["evaluation"]``).
- ``s5-mlp``: one-hidden-layer ReLU network on S5 composition (``S5MLP``, a custom
  ``HookedRootModule``); ``groups`` holds S5 and its representations.

Retrain with ``python -m tl_interp.models.train NAME [--steps N] [--seed S] [--out DIR]``;
``load(name, directory=DIR)`` loads such a run.

Example:
    >>> from tl_interp.models import zoo
    >>> model = zoo.REGISTRY["s5-mlp"]()
    >>> model.card["evaluation"]["test_accuracy"] > 0.99
    True
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tl_interp import compat
from tl_interp.errors import ModelLoadError
from tl_interp.models.zoo import groups
from tl_interp.models.zoo._store import ZOO_DIR, load_parameters, read_card, read_weights
from tl_interp.models.zoo.groups import (
    REPRESENTATIONS,
    S5_ORDER,
    character,
    compose,
    element_index,
    elements,
    identity_index,
    inverses,
    multiplication_table,
    representation,
    signs,
)
from tl_interp.models.zoo.induction import (
    half_losses,
    head_scores,
    induction_config,
    induction_fields,
    repeated_tokens,
)
from tl_interp.models.zoo.ordinal import load_ordinal_4l
from tl_interp.models.zoo.s5_mlp import (
    S5MLP,
    S5MLPConfig,
    accuracy_and_loss,
    all_pairs,
    train_test_split,
)

__all__ = [
    "REGISTRY",
    "ZOO_DIR",
    "card",
    "load",
    "load_induction_2l",
    "load_s5_mlp",
    # induction-2l helpers
    "induction_config",
    "repeated_tokens",
    "head_scores",
    "half_losses",
    # s5-mlp and the group
    "S5MLP",
    "S5MLPConfig",
    "all_pairs",
    "train_test_split",
    "accuracy_and_loss",
    "groups",
    "S5_ORDER",
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


def card(name: str, *, directory: Path | str | None = None) -> dict[str, Any]:
    """The model card of a zoo model, without loading its weights.

    Args:
        name: a key of ``REGISTRY``.
        directory: a directory written by ``python -m tl_interp.models.train --out``;
            default the packaged zoo.

    Returns:
        The card as a dict (see ``cards/<name>.json``).

    Example:
        >>> card("induction-2l")["evaluation"]["induction_head"][0]  # its layer
        1
    """
    _check_name(name)
    return read_card(name, directory)


def load_induction_2l(*, directory: Path | str | None = None) -> torch.nn.Module:
    """Load ``induction-2l`` (a 2-layer attention-only HookedTransformer; on TransformerLens 4 a native
    TransformerBridge in compatibility mode with the same weights), eval mode, CPU.

    Args:
        directory: where the weights and card live; default the packaged zoo.

    Returns:
        The model, with its card as ``model.card``.

    Example:
        >>> model = load_induction_2l()
        >>> model.cfg.n_layers, model.cfg.n_heads
        (2, 3)
    """
    model = compat.tl.build_from_fields(induction_fields(init_weights=False), read_weights("induction-2l", directory),
                                        name="induction-2l")
    model.card = read_card("induction-2l", directory)
    return model.eval()


def load_s5_mlp(*, directory: Path | str | None = None) -> S5MLP:
    """Load ``s5-mlp`` (an ``S5MLP`` HookedRootModule), eval mode, CPU.

    Args:
        directory: where the weights and card live; default the packaged zoo.

    Returns:
        The model, with its card as ``model.card``.

    Example:
        >>> model = load_s5_mlp()
        >>> sorted(model.hook_dict)
        ['hook_embed_x', 'hook_embed_y', 'hook_hidden', 'hook_logits', 'hook_pre']
    """
    info = read_card("s5-mlp", directory)
    arch = info["architecture"]
    cfg = S5MLPConfig(d_vocab=arch["d_vocab"], d_embed=arch["d_embed"], d_hidden=arch["d_hidden"])
    model = S5MLP(cfg)
    load_parameters("s5-mlp", model, read_weights("s5-mlp", directory))
    model.card = info
    return model.eval()


REGISTRY: dict[str, Callable[..., Any]] = {
    "induction-2l": load_induction_2l,
    "s5-mlp": load_s5_mlp,
    "ordinal-4l": load_ordinal_4l,
}


def load(name: str, *, directory: Path | str | None = None) -> Any:
    """Load a zoo model by name (``REGISTRY[name](directory=directory)``).

    Args:
        name: a key of ``REGISTRY``.
        directory: where the weights and card live; default the packaged zoo.

    Returns:
        The model, with ``model.card``.

    Example:
        >>> load("s5-mlp").cfg.d_hidden
        128
    """
    _check_name(name)
    return REGISTRY[name](directory=directory)


def _check_name(name: str) -> None:
    if name not in REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, list(REGISTRY), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ModelLoadError(
            f"no zoo model {name!r}; {hint}available: {', '.join(sorted(REGISTRY))}"
        )
