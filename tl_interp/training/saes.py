"""Train a bundled SAE with sae-lens's own trainer, offline and deterministically, on CPU.

    python -m tl_interp.models.train NAME [--steps N] [--seed S] [--out DIR]
                                          [--n-train N] [--n-heldout N] [--threads T]

writes ``DIR/NAME/`` in sae-lens's disk format (``cfg.json`` + ``sae_weights.safetensors``,
loadable with ``sae_lens.SAE.load_from_disk``) plus ``card.json`` (checksummed, with the
SHA-256 of the other two files); DIR defaults to the packaged ``tl_interp/models/saes``.
Steps:

1. the model's residual stream at ``blocks.L.hook_resid_pre`` is computed once for the
   training sequences (``tl_interp.models.saes.corpus``; real tokens from
   ``SAESpec.first_position`` on) and kept in memory;
2. ``sae_lens.training.sae_trainer.SAETrainer`` trains a ``TopKTrainingSAE`` on seeded
   shuffles of those activations (several epochs) -- the trainer, loss, AuxK, LR schedule,
   norm scaling and its folding are sae-lens's; only the data provider is ours, because
   sae-lens's ``ActivationsStore`` would recompute every activation it trains on (too slow
   on CPU) and reads datasets through the ``datasets`` hub machinery;
3. the trained SAE is saved with ``save_inference_model`` (as sae-lens's runner does),
   reloaded with ``SAE.load_from_disk``, and measured on held-out text
   (``tl_interp.ablation.saes``).

Nothing touches the network: the model loads offline, the data are built in-process.
The same name, steps, seed and thread count give bit-identical weights.
"""

import copy
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tl_interp import compat
from tl_interp._io import check_target, manifest, write_checked_json
from tl_interp.compat.sae import sae_metadata, trainer_config
from tl_interp.models.saes import SAES_DIR, corpus
from tl_interp.models.saes.corpus import heldout_data, shuffled_batches, train_data
from tl_interp.ablation.saes import measure, site_activations
from tl_interp.models._source import weights_source
from tl_interp.models.saes.specs import SPECS, SAESpec
from tl_interp.training.common import provenance, sig

__all__ = ["train_sae", "write_sae"]


def _load_model(spec: SAESpec) -> Any:
    from tl_interp import models

    return models.load(spec.model, device="cpu")


def _trainer(spec: SAESpec, sae: Any, provider: Iterator[Tensor], steps: int) -> Any:
    from sae_lens import LoggingConfig, SAETrainer

    cfg = trainer_config(
        total_training_samples=steps * spec.batch_size,
        train_batch_size_samples=spec.batch_size,
        lr=spec.lr,
        lr_end=spec.lr,  # the constant schedule's level before the final linear decay to 0
        lr_scheduler_name="constant",
        lr_warm_up_steps=max(1, steps // 20),
        lr_decay_steps=steps // 5,
        adam_beta1=0.9,
        adam_beta2=0.999,
        device="cpu",
        dead_feature_window=50,  # steps without firing before AuxK treats a latent as dead
        feature_sampling_window=1000,
        n_batches_for_norm_estimate=20,
        logger=LoggingConfig(log_to_wandb=False),
    )
    return SAETrainer(cfg=cfg, sae=sae, data_provider=provider)


def train_sae(
    name: str, *, seed: int = 0, steps: int | None = None, n_train: int | None = None,
    n_heldout: int | None = None, model: Any = None,
) -> tuple[Any, dict[str, Any]]:
    """Train SAE ``name`` (a key of ``SPECS``) and measure it on held-out text.

    Args:
        name: e.g. ``"ordinal-4l-res-l2"``.
        seed: seeds the SAE's initialisation, the data choice and the batch order.
        steps: optimiser steps (default ``SPECS[name].steps``).
        n_train: training sequences (default ``SPECS[name].n_train``).
        n_heldout: held-out sequences measured (default ``SPECS[name].n_heldout``).
        model: the model, if already loaded.

    Returns:
        ``(sae, card)``: a sae-lens inference ``TopKSAE`` (loaded back from sae-lens's disk
        format) and its card (everything but the saved files' sizes and hashes).

    Example:
        >>> from tl_interp.compat.sae import sae_hook_name
        >>> from tl_interp.models.zoo import load
        >>> sae, card = train_sae("ordinal-4l-res-l2", steps=2, n_train=120, n_heldout=10, model=load("ordinal-4l"))
        >>> sae_hook_name(sae), card["provenance"]["steps"]
        ('blocks.2.hook_resid_pre', 2)
    """
    compat.require_sae("training.train_sae")  # sae-lens requires TransformerLens < 4
    from sae_lens import SAE, TopKTrainingSAE, TopKTrainingSAEConfig

    spec = SPECS[name]
    steps = spec.steps if steps is None else steps
    start = time.perf_counter()
    model = _load_model(spec) if model is None else model
    tokens, mask = train_data(spec, model, seed=seed, n=n_train)
    acts = site_activations(model, spec.layer, tokens, mask, first_position=spec.first_position)
    collected = time.perf_counter() - start

    torch.manual_seed(seed)
    meta = sae_metadata(model_name=spec.model, hook_name=spec.hook_name, context_size=spec.context_size,
                       prepend_bos=True, seqpos_slice=[spec.first_position, None])
    sae_cfg = TopKTrainingSAEConfig(d_in=model.cfg.d_model, d_sae=spec.d_sae, k=spec.k,
                                    normalize_activations="expected_average_only_in", metadata=meta)
    trainer = _trainer(spec, TopKTrainingSAE(sae_cfg), shuffled_batches(acts, spec.batch_size, seed=seed), steps)
    trained = trainer.fit()
    with tempfile.TemporaryDirectory() as tmp:
        trained.save_inference_model(tmp)
        sae = SAE.load_from_disk(tmp)
    sae.eval()
    trained_seconds = time.perf_counter() - start

    if spec.storage == "float16":  # what write_sae stores; the card measures the rounded weights
        sae = sae.to(torch.float16)
    evaluation = measure(copy.deepcopy(sae).to(torch.float32), model, spec, *heldout_data(spec, model, n_heldout))
    card = {
        "name": name,
        "summary": f"TopK SAE (k={spec.k}, {spec.d_sae} features) on {spec.model}'s residual stream at "
                   f"{spec.hook_name}, positions {spec.first_position}: of each sequence",
        "model": weights_source(spec.model),
        "hook_name": spec.hook_name,
        "splice_positions": f"{spec.first_position}:",
        "storage_dtype": spec.storage,
        "spec": spec.to_dict(),
        "training_data": _data_description(spec),
        "n_training_activations": int(acts.shape[0]),
        "epochs": round(steps * spec.batch_size / acts.shape[0], 2),
        "trainer": {
            "class": "sae_lens.training.sae_trainer.SAETrainer",
            "sae_class": "sae_lens.saes.topk_sae.TopKTrainingSAE",
            **{k: v for k, v in vars(trainer.cfg).items() if k not in ("logger", "checkpoint_path")},
            "normalize_activations": "expected_average_only_in (folded into the saved weights)",
            "aux_loss_coefficient": sae_cfg.aux_loss_coefficient,
            "final_window_l0": sig(float(trainer.feature_sparsity.sum()), 5) if trainer.n_frac_active_samples else None,
        },
        "evaluation": evaluation,
        "provenance": provenance(name, steps=steps, seed=seed, libraries=("sae-lens",), seconds={
            "activation_seconds": collected,
            "training_seconds": trained_seconds - collected,
            "evaluation_seconds": time.perf_counter() - start - trained_seconds,
        }),
    }
    return sae, card


def _data_description(spec: SAESpec) -> dict[str, Any]:
    if spec.data == "ordinal":
        return {
            "source": "ordinal-4l's training distribution: corpus.ordinal_sequences (train split; BOS, with "
                      "probability 0.5 a solved example and '.', then a prompt and its answer)",
            "heldout": "corpus.ordinal_heldout: the same construction over the test and heldout splits "
                       "(prompts and contexts the model never trained on), seed ORDINAL_HELDOUT_SEED",
        }
    return {
        "source": "CPython standard library pydoc_data.topics (the Language Reference sections help() shows), "
                  "documents hashed into train/heldout by corpus.pydoc_documents",
        "python": platform.python_version(),
        "corpus_sha256": corpus.corpus_sha256(),
        "chunks": f"{spec.context_size} tokens: <|im_start|> + {spec.context_size - 1} corpus tokens",
        "heldout": "the first n_heldout chunks of the held-out documents",
    }


def write_sae(name: str, sae: Any, card: dict[str, Any], directory: Path | str | None = None) -> Path:
    """Save ``sae`` (``save_model``) and its card to ``DIRECTORY/NAME``, replacing any old copy atomically.

    Args:
        name: the SAE's name (its folder).
        sae: a sae-lens SAE.
        card: its card; the files' sizes and hashes are added under ``"files"``.
        directory: default the packaged ``tl_interp/models/saes``.

    Returns:
        The folder written.

    Example:
        >>> from sae_lens import TopKSAE, TopKSAEConfig
        >>> folder = write_sae("x", TopKSAE(TopKSAEConfig(d_in=4, d_sae=8, k=2)), {}, tempfile.mkdtemp())
        >>> sorted(p.name for p in folder.iterdir())
        ['card.json', 'cfg.json', 'sae_weights.safetensors']
    """
    final = check_target(Path(directory or SAES_DIR) / name, directory=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=final.parent))
    try:
        weights, cfg = sae.save_model(tmp)
        write_checked_json(tmp / "card.json", {**card, "files": manifest(tmp, [Path(weights).name, Path(cfg).name])})
        tmp.chmod(0o755)
        for p in tmp.iterdir():
            p.chmod(0o644)
        old = final.with_name(f".{name}.old-{os.getpid()}")
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
