"""The bundled SAEs load through sae-lens, splice exactly, and measure what their cards say."""

import hashlib
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.testing import assert_close

from tests.conftest import no_hooks_attached
from tl_interp import hooks, metrics, models
from tl_interp.errors import ModelLoadError
from tl_interp.models.saes import (
    SAE_NAMES,
    SPECS,
    load_sae,
    sae_card,
    sae_path,
    splice_positions,
)
from tl_interp.models.saes.corpus import heldout_data
from tl_interp.ablation.saes import measure, splice_losses
from tl_interp.training.cli import main as train_main

ORDINAL = "ordinal-4l-res-l2"
SMOLLM2 = "smollm2-135m-res-l15"
GEMMA = "gemma-3-270m-res-l9"
MAX_SAE_BYTES = 25 * 2**20


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _hooked_sae_transformer(model: Any) -> Any:
    """sae-lens's own HookedSAETransformer with the same config and weights as ``model``."""
    from sae_lens import HookedSAETransformer  # here, not at the top: the rest of the module runs without sae-lens

    twin = HookedSAETransformer(model.cfg)
    twin.load_state_dict(model.state_dict())
    return twin.eval()


def _figures_agree(measured: dict[str, Any], card: dict[str, Any], tol: dict[str, float]) -> None:
    for key, atol in tol.items():
        assert measured[key] == pytest.approx(card[key], abs=atol), f"{key}: measured {measured[key]}, card {card[key]}"


@pytest.fixture(scope="module")
def ordinal() -> Any:
    return models.load("ordinal-4l")


@pytest.fixture(scope="module")
def ordinal_tokens(ordinal: Any) -> torch.Tensor:
    tokens, _ = heldout_data(SPECS[ORDINAL], ordinal, n=16)
    return tokens


@pytest.mark.parametrize("name", SAE_NAMES)
def test_every_bundled_sae_loads_through_sae_lens_at_its_hook_point(name: str) -> None:
    from sae_lens import SAE, TopKSAE

    spec = SPECS[name]
    sae = load_sae(name)
    assert isinstance(sae, TopKSAE)
    assert sae.cfg.metadata.hook_name == spec.hook_name == f"blocks.{spec.layer}.hook_resid_pre"
    assert (sae.cfg.d_sae, sae.cfg.k, sae.W_enc.dtype) == (spec.d_sae, spec.k, torch.float32)
    assert splice_positions(sae) == slice(spec.first_position, None)
    assert sae.card == sae_card(name)
    direct = SAE.load_from_disk(sae_path(name))
    for key, value in direct.state_dict().items():
        assert torch.equal(sae.state_dict()[key], value), key


@pytest.mark.parametrize("name", SAE_NAMES)
def test_the_card_describes_the_files_next_to_it(name: str) -> None:
    folder, card = sae_path(name), sae_card(name)
    for file, info in card["files"].items():
        assert (folder / file).stat().st_size == info["bytes"]
        assert _sha256(folder / file) == info["sha256"], f"{file} changed after its card was written"
    assert sum(p.stat().st_size for p in folder.iterdir()) < MAX_SAE_BYTES
    figures = card["evaluation"]
    assert 0.0 < figures["explained_variance"] <= 1.0 and figures["l0"] <= SPECS[name].k
    assert figures["loss_clean"] <= figures["loss_spliced"] < figures["loss_zero_ablated"]


def test_the_ordinal_sae_was_trained_on_the_packaged_ordinal_model() -> None:
    from tl_interp.models.zoo._store import weights_path

    recorded = sae_card(ORDINAL)["model"]["weights_sha256"]
    assert _sha256(weights_path("ordinal-4l")) == recorded, (
        "ordinal-4l's weights changed since its SAE was trained; retrain it with "
        f"`python -m tl_interp.models.train {ORDINAL}`")


def test_an_unknown_sae_name_lists_the_known_ones() -> None:
    with pytest.raises(ModelLoadError, match=r"no bundled SAE 'ordinal-4l-res-l3'; did you mean 'ordinal-4l-res-l2'\? "
                                             r"known SAEs: smollm2-135m-res-l15, ordinal-4l-res-l2, gemma-3-270m-res-l9"):
        load_sae("ordinal-4l-res-l3")
    with pytest.raises(ModelLoadError, match=r"SAE 'ordinal-4l-res-l2' has no weights at .*; train it with"):
        load_sae(ORDINAL, directory="/nonexistent")


def test_tl_interp_models_reexports_load_sae_without_importing_sae_lens() -> None:
    assert models.load_sae is load_sae and models.SAE_NAMES == SAE_NAMES == (SMOLLM2, ORDINAL, GEMMA)
    code = "import sys, tl_interp.models; assert 'sae_lens' not in sys.modules, 'sae_lens imported eagerly'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_an_empty_splice_with_the_error_term_reproduces_the_model(ordinal: Any, ordinal_tokens: torch.Tensor) -> None:
    sae = load_sae(ORDINAL)
    clean = ordinal(ordinal_tokens)
    assert torch.equal(hooks.sae_splice(sae).run(ordinal, ordinal_tokens), clean)
    no_op = hooks.sae_splice(sae, hooks.scale_features(list(range(0, 1024, 7)), 1.0), positions=splice_positions(sae))
    assert_close(no_op.run(ordinal, ordinal_tokens), clean, rtol=1e-5, atol=1e-5)
    assert no_hooks_attached(ordinal)


def test_a_splice_without_the_error_term_matches_run_with_saes(ordinal: Any, ordinal_tokens: torch.Tensor) -> None:
    sae = load_sae(ORDINAL)
    theirs = _hooked_sae_transformer(ordinal).run_with_saes(ordinal_tokens, saes=[sae], use_error_term=False)
    ours = hooks.sae_splice(sae, keep_error=False, positions="all").run(ordinal, ordinal_tokens)  # as sae-lens: everywhere
    assert_close(ours, theirs, rtol=0, atol=1e-5)
    trained = hooks.sae_splice(sae, keep_error=False)  # default: the card's positions (1: for this SAE)
    assert "positions From(1) from the SAE's card" in str(trained)
    by_hand = hooks.sae_splice(sae, keep_error=False, positions=slice(1, None)).run(ordinal, ordinal_tokens)
    assert torch.equal(trained.run(ordinal, ordinal_tokens), by_hand)
    assert not torch.allclose(ours, ordinal(ordinal_tokens), atol=1e-3)  # the SAE is lossy: the check can fail


@torch.no_grad()
@pytest.mark.parametrize("memory_mb", [1024.0, 2.0])  # one plan of 64 rows; plans of a few rows, a cell per pass
def test_splice_losses_on_the_engine_equal_full_edited_runs(ordinal: Any, memory_mb: float) -> None:
    sae = load_sae(ORDINAL)
    tokens, mask = heldout_data(SPECS[ORDINAL], ordinal, n=64)
    fast = splice_losses(sae, ordinal, tokens, mask, loss="answer", memory_mb=memory_mb)
    last = mask.sum(-1) - 1
    answer_loss = lambda logits: -metrics.answer_logprob(tokens[torch.arange(64), last], positions=last - 1)(logits)
    spliced = hooks.sae_splice(sae, keep_error=False, positions=slice(1, None)).run(ordinal, tokens)
    zeroed = hooks.zero_ablate(sae.cfg.metadata.hook_name, positions=slice(1, None)).run(ordinal, tokens)
    assert fast["clean"] == pytest.approx(float(answer_loss(ordinal(tokens))), rel=1e-5, abs=1e-7)
    assert fast["spliced"] == pytest.approx(float(answer_loss(spliced)), rel=1e-5, abs=1e-7)
    assert fast["zero_ablated"] == pytest.approx(float(answer_loss(zeroed)), rel=1e-5, abs=1e-7)
    assert fast["zero_ablated"] > fast["spliced"] + 1.0


@torch.no_grad()
def independent_figures(sae: Any, model: Any, tokens: torch.Tensor, mask: torch.Tensor, *, first: int,
                        loss: str, losses: bool = True) -> dict[str, float]:
    """The card's figures recomputed from their definitions with sae-lens's encode/decode and
    plain TransformerLens hooks written here (not tl_interp's measure / sae_splice)."""
    hook = sae.cfg.metadata.hook_name
    layer = int(hook.split(".")[1])
    _, cache = model.run_with_cache(tokens, names_filter=hook, stop_at_layer=layer + 1)
    real = mask[:, first:].bool()
    acts = cache[hook][:, first:][real].double()
    feats = sae.encode(acts.float())
    recon = sae.decode(feats).double()
    figures = {
        "explained_variance": float(1 - (recon - acts).pow(2).sum() / (acts - acts.mean(0)).pow(2).sum()),
        "l0": float((feats != 0).sum(-1).double().mean()),
        "dead_fraction": float(((feats != 0).sum(0) == 0).double().mean()),
    }
    if not losses:
        return figures

    def splice(act: torch.Tensor, hook: Any) -> torch.Tensor:
        return torch.cat([act[:, :first], sae.decode(sae.encode(act[:, first:]))], dim=1)

    def zero(act: torch.Tensor, hook: Any) -> torch.Tensor:
        return torch.cat([act[:, :first], torch.zeros_like(act[:, first:])], dim=1)

    def mean_loss(logits: torch.Tensor) -> float:
        logp = logits.double().log_softmax(-1)
        if loss == "answer":  # the last real token, predicted one position before it
            last = mask.sum(-1) - 1
            rows = torch.arange(tokens.shape[0])
            return float(-logp[rows, last - 1, tokens[rows, last]].mean())
        per_token = -logp[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]
        keep = mask[:, 1:].double()  # targets that are real tokens
        return float(((per_token * keep).sum(-1) / keep.sum(-1)).mean())

    clean = mean_loss(model(tokens, attention_mask=mask))
    spliced = mean_loss(model.run_with_hooks(tokens, attention_mask=mask, fwd_hooks=[(hook, splice)]))
    zeroed = mean_loss(model.run_with_hooks(tokens, attention_mask=mask, fwd_hooks=[(hook, zero)]))
    figures.update(loss_clean=clean, ce_loss_increase=spliced - clean, zero_ablation_increase=zeroed - clean,
                   ce_loss_recovered=(zeroed - spliced) / (zeroed - clean))
    return figures


def test_the_ordinal_card_figures_are_remeasured_independently_on_held_out_text(ordinal: Any) -> None:
    spec = SPECS[ORDINAL]
    tokens, mask = heldout_data(spec, ordinal, n=500)
    measured = independent_figures(load_sae(ORDINAL), ordinal, tokens, mask, first=spec.first_position, loss=spec.loss)
    _figures_agree(measured, sae_card(ORDINAL)["evaluation"], {  # 500 of the card's 2000 sequences
        "explained_variance": 0.005, "l0": 0.1, "dead_fraction": 0.01, "ce_loss_increase": 0.005,
        "zero_ablation_increase": 0.05, "ce_loss_recovered": 0.002, "loss_clean": 0.01,
    })


def test_measure_equals_the_independent_recomputation(ordinal: Any) -> None:
    spec = SPECS[ORDINAL]
    tokens, mask = heldout_data(spec, ordinal, n=120)
    sae = load_sae(ORDINAL)
    ours = measure(sae, ordinal, spec, tokens, mask)
    theirs = independent_figures(sae, ordinal, tokens, mask, first=spec.first_position, loss=spec.loss)
    _figures_agree(ours, theirs, {key: 1e-4 for key in theirs})


def _no_network(*args: Any, **kwargs: Any) -> None:
    raise AssertionError(f"SAE training tried to open a network connection: {args}")


def test_the_training_script_trains_offline_saves_and_reloads_deterministically(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _no_network)
    args = [ORDINAL, "--steps", "3", "--n-train", "120", "--n-heldout", "20", "--threads", "1"]
    assert train_main([*args, "--out", str(tmp_path / "a")]) == 0
    assert train_main([*args, "--out", str(tmp_path / "b")]) == 0
    first, second = load_sae(ORDINAL, directory=tmp_path / "a"), load_sae(ORDINAL, directory=tmp_path / "b")
    assert first.cfg.metadata.hook_name == SPECS[ORDINAL].hook_name
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key
    assert first.card["evaluation"] == second.card["evaluation"]
    assert first.card["provenance"]["steps"] == 3


# SmolLM2-135M: ~2 s to load once cached, ~40 s the first time on a fresh machine.


@pytest.fixture(scope="module")
def smollm2() -> Any:
    return models.load("smollm2-135m", device="cpu")


@pytest.fixture(scope="module")
def smollm2_tokens(smollm2: Any) -> torch.Tensor:
    tokens, _ = heldout_data(SPECS[SMOLLM2], smollm2, n=2)
    return tokens[:, :24]


@pytest.mark.real_model
def test_smollm2_sae_empty_splice_with_the_error_term_reproduces_the_model(smollm2: Any, smollm2_tokens: torch.Tensor) -> None:
    sae = load_sae(SMOLLM2)
    assert torch.equal(hooks.sae_splice(sae).run(smollm2, smollm2_tokens), smollm2(smollm2_tokens))


@pytest.mark.real_model
def test_smollm2_sae_without_the_error_term_matches_run_with_saes(smollm2: Any, smollm2_tokens: torch.Tensor) -> None:
    sae = load_sae(SMOLLM2)
    theirs = _hooked_sae_transformer(smollm2).run_with_saes(smollm2_tokens, saes=[sae], use_error_term=False)
    ours = hooks.sae_splice(sae, keep_error=False, positions="all").run(smollm2, smollm2_tokens)  # as sae-lens
    assert_close(ours, theirs, rtol=0, atol=1e-5)
    assert not torch.allclose(ours, smollm2(smollm2_tokens), atol=1e-2)


@pytest.mark.real_model
def test_smollm2_card_figures_are_remeasured_independently_on_held_out_text(smollm2: Any) -> None:
    spec = SPECS[SMOLLM2]
    tokens, mask = heldout_data(spec, smollm2, n=16)
    measured = independent_figures(load_sae(SMOLLM2), smollm2, tokens, mask, first=spec.first_position, loss=spec.loss)
    _figures_agree(measured, sae_card(SMOLLM2)["evaluation"], {  # 16 of the card's 32 chunks
        "explained_variance": 0.03, "l0": 0.5, "ce_loss_increase": 0.06, "zero_ablation_increase": 0.5,
        "ce_loss_recovered": 0.01,
    })


@pytest.mark.real_model
def test_smollm2_training_script_runs_a_few_steps_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _no_network)
    assert train_main([SMOLLM2, "--steps", "2", "--n-train", "12", "--n-heldout", "2", "--out", str(tmp_path)]) == 0
    sae = load_sae(SMOLLM2, directory=tmp_path)
    assert sae.cfg.metadata.hook_name == "blocks.15.hook_resid_pre"
    assert set(sae.card["evaluation"]) >= {"explained_variance", "l0", "dead_fraction", "ce_loss_increase"}


@pytest.mark.real_model
@pytest.mark.gemma
def test_gemma_sae_card_figures_are_remeasured_independently_on_held_out_text() -> None:
    from tests.test_gemma import _require_package

    _require_package()
    spec = SPECS[GEMMA]
    gemma = models.load("gemma-3-270m", device="cpu")
    sae = load_sae(GEMMA)
    assert sae.W_enc.dtype == torch.float32 and sae_card(GEMMA)["storage_dtype"] == "float16"
    card = sae_card(GEMMA)["evaluation"]
    tokens, mask = heldout_data(spec, gemma)  # all 32 chunks: activations only, no 262k-token logits
    reconstruction = independent_figures(sae, gemma, tokens, mask, first=spec.first_position, loss=spec.loss,
                                         losses=False)
    _figures_agree(reconstruction, card, {"explained_variance": 1e-3, "l0": 1e-3, "dead_fraction": 1e-3})
    # losses on 4 chunks (their explained variance is 0.81, not 0.66: chunks differ a lot)
    measured = independent_figures(sae, gemma, tokens[:4], mask[:4], first=spec.first_position, loss=spec.loss)
    _figures_agree(measured, card, {"ce_loss_increase": 0.3, "ce_loss_recovered": 0.05})


def test_splice_losses_send_their_cells_to_the_executor_with_the_budget(ordinal: Any) -> None:
    from tests.conftest import PlanRecorder

    sae, capture = load_sae(ORDINAL), PlanRecorder()
    tokens, mask = heldout_data(SPECS[ORDINAL], ordinal, n=24)
    here = splice_losses(sae, ordinal, tokens, mask, memory_mb=2.0)
    there = splice_losses(sae, ordinal, tokens, mask, memory_mb=2.0, executor=capture)
    assert there == here
    assert len(capture.plans) > 1 and sum(len(p.batch) for p in capture.plans) == 24
    assert all(p.options.memory_mb == 2.0 and p.keys == (("spliced",), ("spliced_all_positions",), ("zero_ablated",))
               for p in capture.plans)
