"""What each bundled SAE is: its model, hook point, size, data and training hyperparameters.

All SAEs are TopK SAEs (Gao et al. 2024, "Scaling and evaluating sparse autoencoders",
arXiv:2406.04093) trained with sae-lens's ``SAETrainer``. TopK rather than ReLU + L1
because L0 is set directly by ``k``: there is no L1 coefficient to sweep (a sweep does not fit
a 10-minute CPU budget), no shrinkage of feature activations, and the AuxK loss revives dead
latents. Inputs are scaled to mean norm sqrt(d_in) during training (sae-lens's
``expected_average_only_in``); the factor is folded into the saved weights.
"""

from dataclasses import asdict, dataclass
from typing import Any, Literal

from tl_interp._checks import checked
from tl_interp.compat.sae import sae_seqpos_slice

__all__ = ["SAESpec", "SPECS", "splice_positions"]


@dataclass(frozen=True)
class SAESpec:
    """One bundled SAE's recipe (``SPECS[name]``); ``python -m tl_interp.models.train`` runs it.

    Attributes:
        name: the SAE's name (its folder under ``tl_interp/models/saes/``).
        model: the ``tl_interp.models.load`` name of the model it reads.
        layer: the hook point is ``blocks.{layer}.hook_resid_pre``.
        first_position: the SAE reads positions ``first_position:`` of each sequence (it was
            trained and is measured there; splice it there). SmolLM2: 2, because position 0
            (``<|im_start|>``) is the attention sink and the token after it often carries a
            massive activation too (residual norm ~2e3..2e4 against ~150 elsewhere, in 3% of
            chunks); ordinal-4l: 1 (position 0 is BOS, the same vector in every row).
        d_sae: number of features.
        k: active features per token (TopK).
        data: ``"pydoc"`` (``corpus.pydoc_text``) or ``"ordinal"`` (``corpus.ordinal_sequences``).
        n_train: training sequences (chunks of ``context_size`` tokens for pydoc).
        n_heldout: held-out sequences measured for the card.
        context_size: tokens per pydoc chunk, BOS included (ordinal sequences are shorter).
        steps: optimiser steps; each sees ``batch_size`` activations.
        batch_size: activations per step.
        lr: Adam learning rate (constant after warm-up, linear decay to 0 over the last 20%).
        loss: what the CE figures measure: ``"next_token"`` (mean next-token loss of every
            position) or ``"answer"`` (loss of the answer, the last token of each row).
        storage: dtype of the saved weights; ``"float16"`` halves the committed file (the
            card is measured on the rounded weights; ``load_sae`` computes in float32).
    """

    name: str
    model: str
    layer: int
    first_position: int
    d_sae: int
    k: int
    data: Literal["pydoc", "ordinal"]
    n_train: int
    n_heldout: int
    context_size: int
    steps: int
    batch_size: int
    lr: float
    loss: Literal["next_token", "answer"]
    storage: Literal["float32", "float16"] = "float32"

    @property
    def hook_name(self) -> str:
        """The TransformerLens hook point, ``blocks.{layer}.hook_resid_pre``."""
        return f"blocks.{self.layer}.hook_resid_pre"

    @property
    def positions(self) -> slice:
        """The positions the SAE reads: ``slice(first_position, None)``."""
        return slice(self.first_position, None)

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-ready dict (for the card)."""
        return {**asdict(self), "hook_name": self.hook_name}


@checked
def splice_positions(sae: Any) -> slice:
    """The positions an SAE was trained on: its ``cfg.metadata.seqpos_slice`` as a slice.

    Example:
        >>> from sae_lens import TopKSAE, TopKSAEConfig
        >>> from tl_interp.compat.sae import sae_metadata
        >>> splice_positions(TopKSAE(TopKSAEConfig(d_in=4, d_sae=8, k=2, metadata=sae_metadata(seqpos_slice=[2, None]))))
        slice(2, None, None)
    """
    bounds = sae_seqpos_slice(sae) or (None,)
    return slice(*bounds)


SPECS: dict[str, SAESpec] = {
    "smollm2-135m-res-l15": SAESpec(
        name="smollm2-135m-res-l15", model="smollm2-135m", layer=15, first_position=2, d_sae=2304, k=32,
        data="pydoc", n_train=800, n_heldout=32, context_size=128,
        steps=1000, batch_size=1024, lr=3e-3, loss="next_token",
    ),
    "ordinal-4l-res-l2": SAESpec(
        name="ordinal-4l-res-l2", model="ordinal-4l", layer=2, first_position=1, d_sae=1024, k=16,
        data="ordinal", n_train=12000, n_heldout=2000, context_size=32,
        steps=1500, batch_size=1024, lr=3e-3, loss="answer",
    ),
    # Gemma-3-270M (opt-in model): the middle of its 18 layers, 4 x d_model features, stored
    # in float16 so the folder stays ~7 MB; position 0 is BOS, the attention sink.
    "gemma-3-270m-res-l9": SAESpec(
        name="gemma-3-270m-res-l9", model="gemma-3-270m", layer=9, first_position=1, d_sae=2560, k=32,
        data="pydoc", n_train=800, n_heldout=32, context_size=128,
        steps=1000, batch_size=1024, lr=3e-3, loss="next_token", storage="float16",
    ),
}
