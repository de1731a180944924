"""The logit lens and the tuned lens read each layer through the model's own head, exactly.

References: the model's own logits (final layer), a hand-hooked loop (``run_with_cache`` +
``ln_final`` + ``W_U``) for every layer, and the same prompts run one by one for padded batches.
"""

import tempfile
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

import tl_interp as ti
from tl_interp.errors import ArtifactError, InputError, ModelLoadError, OptionError, ShapeError
from tl_interp.lens import LensResult, Translators

from .conftest import gpt2_style, llama_style


def _zoo(name: str):
    return ti.models.load(name)


def _tokens(model, n: int = 3, width: int = 9, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded random token ids (row i has width - i real tokens)."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, model.cfg.d_vocab, (n, width), generator=gen)
    mask = torch.ones_like(tokens)
    for i in range(n):
        mask[i, width - i:] = 0
    return tokens * mask, mask


MODELS = {"induction-2l": lambda: _zoo("induction-2l"), "ordinal-4l": lambda: _zoo("ordinal-4l"),
          "llama-style (GQA, rotary, RMSNorm)": llama_style, "gpt2-style (LayerNorm)": gpt2_style}


@pytest.fixture(scope="module", params=list(MODELS))
def model(request):
    return MODELS[request.param]()


def _by_hand(model, tokens, mask, layer_site: str) -> torch.Tensor:
    """Logits of ``layer_site``'s residual through ln_final + W_U + b_U, from TL's own cache."""
    _, cache = model.run_with_cache(tokens, attention_mask=mask)
    resid = cache[layer_site]
    x = model.ln_final(resid) if model.cfg.normalization_type is not None else resid
    return x @ model.W_U + model.b_U


def test_the_final_reading_is_the_models_own_distribution(model) -> None:
    tokens, mask = _tokens(model)
    answers = torch.tensor([3, 5, 7])
    lens = ti.lens.logit_lens(model, tokens, attention_mask=mask, positions="all", answers=answers, top_k=3,
                              progress=False)
    logits = model(tokens, attention_mask=mask).float()
    probs = logits.softmax(-1)
    for row in range(3):
        for slot in lens.extras["mask"][row].nonzero().flatten().tolist():
            pos = int(lens.extras["position"][row, slot])
            top = probs[row, pos].topk(3)
            assert_close(lens.extras["top_probs"][-1, row, slot], top.values, atol=1e-4, rtol=0)
            assert_close(lens.extras["answer_prob"][-1, row, slot, 0], probs[row, pos, answers[row]], atol=1e-4, rtol=0)
            assert abs(float(lens.values[-1, row, slot])) <= 1e-4
    assert not lens.extras["mask"][2, 7:].any()  # row 2's two pad positions are never read


def test_every_layer_equals_a_hand_hooked_reading(model) -> None:
    tokens, mask = _tokens(model, n=2, width=6)
    lens = ti.lens.logit_lens(model, tokens, attention_mask=mask, answers=[4, 9], top_k=4, progress=False)
    last = mask.sum(1) - 1
    for layer in range(model.cfg.n_layers + 1):
        site = (f"blocks.{layer}.hook_resid_pre" if layer < model.cfg.n_layers
                else f"blocks.{model.cfg.n_layers - 1}.hook_resid_post")
        logp = _by_hand(model, tokens, mask, site)[torch.arange(2), last].log_softmax(-1)
        final = model(tokens, attention_mask=mask)[torch.arange(2), last].log_softmax(-1)
        kl = (final.exp() * (final - logp)).sum(-1)
        entropy = -(logp.exp() * logp).sum(-1)
        assert_close(lens.values[layer, :, 0], kl, atol=1e-4, rtol=1e-4)
        assert_close(lens.extras["entropy"][layer, :, 0], entropy, atol=1e-4, rtol=1e-4)
        assert_close(lens.extras["top_probs"][layer, :, 0], logp.exp().topk(4).values, atol=1e-5, rtol=1e-4)
        ranks = (logp[:, None, :] > logp[:, [4, 9]][..., None]).sum(-1)
        assert torch.equal(lens.extras["answer_rank"][layer, :, 0], ranks)


def test_a_padded_batch_equals_its_prompts_run_one_by_one(model) -> None:
    tokens, mask = _tokens(model, n=3, width=8, seed=1)
    batched = ti.lens.logit_lens(model, tokens, attention_mask=mask, positions="all", answers=[2], progress=False)
    for row in range(3):
        n_real = int(mask[row].sum())
        alone = ti.lens.logit_lens(model, tokens[row:row + 1, :n_real], positions="all", answers=[2], progress=False)
        assert_close(batched.values[:, row, :n_real], alone.values[:, 0], atol=1e-4, rtol=1e-4)
        assert_close(batched.extras["answer_prob"][:, row, :n_real], alone.extras["answer_prob"][:, 0],
                     atol=1e-5, rtol=1e-4)
        assert torch.equal(batched.extras["top_tokens"][:, row, :n_real], alone.extras["top_tokens"][:, 0])


def test_the_tuned_lens_applies_each_layers_translator_before_the_head() -> None:
    model = llama_style()
    n, d = model.cfg.n_layers, model.cfg.d_model
    gen = torch.Generator().manual_seed(0)
    translators = Translators(0.1 * torch.randn(n, d, d, generator=gen), torch.randn(n, d, generator=gen))
    tokens, mask = _tokens(model, n=2, width=5)
    tuned = ti.lens.tuned_lens(model, tokens, attention_mask=mask, translators=translators, progress=False)
    _, cache = model.run_with_cache(tokens, attention_mask=mask)
    last = mask.sum(1) - 1
    final = model(tokens, attention_mask=mask)[torch.arange(2), last].log_softmax(-1)
    for layer in range(n):
        h = cache[f"blocks.{layer}.hook_resid_pre"][torch.arange(2), last]
        h = h + h @ translators.weight[layer].T + translators.bias[layer]
        logp = (model.ln_final(h[:, None])[:, 0] @ model.W_U + model.b_U).log_softmax(-1)
        assert_close(tuned.values[layer, :, 0], (final.exp() * (final - logp)).sum(-1), atol=1e-4, rtol=1e-4)
    assert abs(float(tuned.values[-1].abs().max())) < 1e-4  # the final layer has no translator


def test_untrained_translators_give_the_logit_lens() -> None:
    model = _zoo("ordinal-4l")
    identity = Translators.identity(model.cfg.n_layers, model.cfg.d_model)
    a = ti.lens.tuned_lens(model, ["after may comes", "one two"], translators=identity, progress=False)
    b = ti.lens.logit_lens(model, ["after may comes", "one two"], progress=False)
    assert_close(a.values, b.values, atol=1e-6, rtol=0)


def test_layers_select_lens_layers_and_negative_counts_from_the_final_one() -> None:
    model = _zoo("ordinal-4l")
    lens = ti.lens.logit_lens(model, "after may comes", layers=[0, -1], progress=False)
    full = ti.lens.logit_lens(model, "after may comes", progress=False)
    assert lens.labels["layer"] == ("0", "final")
    assert_close(lens.values, full.values[[0, -1]])


def test_a_lens_result_saves_loads_and_renders(tmp_path: Path) -> None:
    model = _zoo("ordinal-4l")
    lens = ti.lens.logit_lens(model, ["after may comes", "after june comes"], answers=[" june", " july"],
                              progress=False)
    back = ti.results.Result.load(lens.save(tmp_path / "lens.safetensors"))
    assert isinstance(back, LensResult)
    assert back.strings == lens.strings and back.answer_labels == lens.answer_labels
    for name, extra in lens.extras.items():
        assert torch.equal(back.extras[name], extra), name
    assert "LensResult(logit lens KL to final" in repr(lens)
    assert "top tokens" in lens._repr_html_() and "p( june)=" in lens.summary()
    report = ti.viz.Report("lens").add(lens)
    report.figure(lens.figure(kind="trajectories"))
    page = report.html()
    assert "LensResult" in page and "plotly" in page.lower()


def test_mistakes_fail_before_any_forward_pass() -> None:
    model = _zoo("ordinal-4l")
    with pytest.raises(ti.SelectionError, match=r"layers: 7 is not a lens layer; they are 0\.\.4"):
        ti.lens.logit_lens(model, "after may comes", layers=[7], progress=False)
    with pytest.raises(InputError, match=r"answers: 'after may' is 2 tokens"):
        ti.lens.logit_lens(model, "after may comes", answers="after may", progress=False)
    with pytest.raises(InputError, match=r"token id 500 is outside the vocabulary \(d_vocab=89\)"):
        ti.lens.logit_lens(model, "after may comes", answers=500, progress=False)
    with pytest.raises(ShapeError, match=r"translators are for \(n_layers, d_model\) = \(2, 8\)"):
        ti.lens.tuned_lens(model, "after may comes", translators=Translators.identity(2, 8), progress=False)
    with pytest.raises(ModelLoadError, match=r"no bundled tuned lens 'smollm2-135m-tuned'; did you mean"):
        ti.lens.tuned_lens(model, "after may comes", translators="smollm2-135m-tuned", progress=False)


def test_translators_round_trip_and_refuse_a_corrupt_file(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    t = Translators(torch.randn(2, 4, 4, generator=gen), torch.randn(2, 4, generator=gen), "toy")
    folder = t.save(tmp_path / "toy", {"name": "toy", "storage_dtype": "float32"})
    back = Translators.load(folder)
    assert torch.equal(back.weight, t.weight) and back.card["name"] == "toy"
    data = (folder / "translators.safetensors").read_bytes()
    (folder / "translators.safetensors").write_bytes(data[:-4] + b"\x00\x00\x00\x01")
    with pytest.raises(ArtifactError, match="does not match its recorded SHA-256"):
        Translators.load(folder)


def test_head_columns_is_the_heads_logits_at_those_columns() -> None:
    from tl_interp import compat

    for model in (llama_style(), gpt2_style()):
        resid = torch.randn(3, 4, model.cfg.d_model, generator=torch.Generator().manual_seed(0))
        columns = torch.tensor([5, 0, 17])
        assert_close(compat.head_columns(model, resid, columns), compat.head(model, resid)[..., columns])


def test_the_lens_equals_transformer_lens_accumulated_resid_with_the_final_norm(model) -> None:
    tokens, _ = _tokens(model, n=2, width=6)
    tokens = tokens.clamp(min=1)  # unpadded: TL's cache helpers know nothing of padding
    lens = ti.lens.logit_lens(model, tokens, top_k=model.cfg.d_vocab, progress=False)
    _, cache = model.run_with_cache(tokens)
    stack, labels = cache.accumulated_resid(apply_ln=True, pos_slice=-1, return_labels=True)
    assert labels[-1] == "final_post" and len(labels) == model.cfg.n_layers + 1
    probs = (stack @ model.W_U + model.b_U).softmax(-1)  # (layer, batch, d_vocab)
    ours = torch.zeros_like(probs).scatter_(-1, lens.extras["top_tokens"][:, :, 0], lens.extras["top_probs"][:, :, 0])
    assert_close(ours, probs, atol=1e-5, rtol=1e-4)


def test_the_trainer_lowers_the_exact_kl_and_is_deterministic() -> None:
    from tl_interp.models.saes.corpus import ordinal_heldout, ordinal_sequences
    from tl_interp.training.lens import LensSpec, _top_tokens, fit_translators, heldout_kl, residuals

    model = _zoo("ordinal-4l")
    tokens, _ = ordinal_sequences(model.tokenizer, 64, seed=0)
    resid = residuals(model, tokens[:, :5], 1, progress=False)
    spec = LensSpec("toy", "ordinal-4l", tokens_per_step=64, top_k=8, n_sampled=32)
    top = _top_tokens(model, resid[-1], spec.top_k)
    w, b, _ = fit_translators(model, resid, top, spec, steps=30, seed=0, progress=False)
    w2, b2, _ = fit_translators(model, resid, top, spec, steps=30, seed=0, progress=False)
    assert torch.equal(w, w2) and torch.equal(b, b2)
    assert all(p.requires_grad for p in model.parameters())  # restored after training
    held, _ = ordinal_heldout(model.tokenizer, 32)
    held_resid = residuals(model, held[:, :5], 1, progress=False)
    logit = heldout_kl(model, None, held_resid)
    tuned = heldout_kl(model, Translators(w, b), held_resid)
    assert sum(tuned) < sum(logit)
    # heldout_kl is the lens's KL: the same numbers through ti.lens
    lens = ti.lens.tuned_lens(model, held[:, :5], translators=Translators(w, b), positions=slice(1, None),
                              progress=False)
    assert_close(lens.values[:-1].double().mean((1, 2)), torch.tensor(tuned, dtype=torch.float64), atol=1e-4, rtol=1e-4)
