"""sae-lens internals: where an SAE's config says which hook point and positions it reads, and
the classes a bundled SAE's training builds that sae-lens does not export at its top level.

sae-lens 6 keeps the hook point in ``sae.cfg.metadata.hook_name`` and the trained positions in
``sae.cfg.metadata.seqpos_slice`` (older releases: ``sae.cfg.hook_name``); ``SAEMetadata``
lives in ``sae_lens.saes.sae`` and ``SAETrainerConfig`` in ``sae_lens.config``. Everything in
tl_interp reads them through the functions here.
"""

import dataclasses
from typing import Any

from tl_interp.compat._guard import NO_FALLBACK, require
from tl_interp.compat.tl import require_sae
from tl_interp.errors import ShapeError

__all__ = ["sae_hook_name", "sae_site", "sae_seqpos_slice", "sae_metadata", "trainer_config"]


def _check_metadata() -> str | None:
    from sae_lens import TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    values = {"hook_name": "blocks.0.hook_resid_pre", "seqpos_slice": [1, None], "model_name": "m",
              "context_size": 3, "prepend_bos": True}
    metadata = TopKSAEConfig(d_in=2, d_sae=2, k=1, metadata=SAEMetadata(**values)).metadata
    changed = [f for f, v in values.items() if getattr(metadata, f, None) != v]
    return f"sae_lens SAEConfig.metadata no longer keeps {changed}" if changed else None


def _check_trainer() -> str | None:
    from sae_lens.config import SAETrainerConfig

    fields = {f.name for f in dataclasses.fields(SAETrainerConfig)}
    missing = [f for f in ("total_training_samples", "train_batch_size_samples", "lr") if f not in fields]
    return f"sae_lens SAETrainerConfig lost {missing}" if missing else None


NO_FALLBACK.update({"sae_metadata": _check_metadata, "sae_trainer": _check_trainer})


def _metadata(sae: Any) -> Any:
    return getattr(getattr(sae, "cfg", None), "metadata", None)


def sae_hook_name(sae: Any) -> str | None:
    """The hook point an SAE's config says it reads (``cfg.metadata.hook_name``), or None.

    Example:
        >>> from sae_lens import TopKSAE, TopKSAEConfig
        >>> sae_hook_name(TopKSAE(TopKSAEConfig(d_in=4, d_sae=8, k=2, metadata=sae_metadata(hook_name="blocks.1.hook_resid_pre"))))
        'blocks.1.hook_resid_pre'
    """
    name = getattr(_metadata(sae), "hook_name", None) or getattr(getattr(sae, "cfg", None), "hook_name", None)
    return name if isinstance(name, str) and name else None


def sae_site(sae: Any) -> str:
    """The hook point an SAE reads, from its config; ``ShapeError`` when the config names none
    (splice such an SAE with an explicit ``where=``).

    Example:
        >>> from sae_lens import TopKSAE, TopKSAEConfig
        >>> sae_site(TopKSAE(TopKSAEConfig(d_in=4, d_sae=8, k=2)))
        Traceback (most recent call last):
        ...
        tl_interp.errors.ShapeError: the SAE's config names no hook point (cfg.metadata.hook_name); pass where=
    """
    name = sae_hook_name(sae)
    if not name:
        raise ShapeError("the SAE's config names no hook point (cfg.metadata.hook_name); pass where=")
    return name


def sae_seqpos_slice(sae: Any) -> tuple[int | None, ...] | None:
    """The positions an SAE was trained on, as its config stores them (``[start, stop]``), or None."""
    bounds = getattr(_metadata(sae), "seqpos_slice", None)
    return tuple(bounds) if bounds else None


def sae_metadata(**fields: Any) -> Any:
    """A sae-lens ``SAEMetadata`` (the ``metadata=`` of an SAE config) with ``fields`` set."""
    require_sae("building an SAE config")
    require("sae_metadata", "building an SAE config")
    from sae_lens.saes.sae import SAEMetadata

    return SAEMetadata(**fields)


def trainer_config(**fields: Any) -> Any:
    """A sae-lens ``SAETrainerConfig`` (what ``SAETrainer`` takes) with ``fields`` set."""
    require_sae("training an SAE")
    require("sae_trainer", "training an SAE")
    from sae_lens.config import SAETrainerConfig

    return SAETrainerConfig(**fields)
