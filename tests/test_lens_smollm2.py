"""The lenses and DLA on SmolLM2-135M (``-m real_model``), and the bundled tuned lens.

The final lens reading equals SmolLM2's logits; DLA sums to its logit difference; the bundled
tuned lens beats the logit lens on held-out text at every layer but the last.
"""

import pytest
import torch
from torch.testing import assert_close

import tl_interp as ti
from tl_interp.lens import LENS_NAMES, load_translators
from tl_interp.positions import From

NAME = "smollm2-135m-tuned-lens"
PROMPTS = ["<|im_start|>The months of the year are January, February, March,",
           "<|im_start|>Monday, Tuesday,"]


def test_the_bundled_tuned_lens_loads_offline_with_its_card() -> None:
    assert NAME in LENS_NAMES
    translators = load_translators(NAME)
    assert (translators.n_layers, translators.d_model) == (30, 576)
    assert translators.card["model_name"] == "smollm2-135m"
    evaluation = translators.card["evaluation"]
    assert all(t < g for t, g in zip(evaluation["tuned_lens_kl"], evaluation["logit_lens_kl"]))


@pytest.fixture(scope="module")
def smollm2():
    return ti.models.load("smollm2-135m")


@pytest.mark.real_model
def test_smollm2_final_lens_reading_is_its_own_distribution(smollm2) -> None:
    lens = ti.lens.logit_lens(smollm2, PROMPTS, answers=[" April"], top_k=3, progress=False)
    for row, prompt in enumerate(PROMPTS):
        probs = smollm2(prompt)[0, -1].softmax(-1)  # each prompt alone: no padding at all
        assert_close(lens.extras["top_probs"][-1, row, 0], probs.topk(3).values, atol=1e-4, rtol=0)
        assert_close(lens.extras["answer_prob"][-1, row, 0, 0], probs[smollm2.to_single_token(" April")],
                     atol=1e-4, rtol=0)
    assert float(lens.values[-1].abs().max()) <= 1e-4


@pytest.mark.real_model
def test_smollm2_dla_sums_to_its_logit_difference(smollm2) -> None:
    prompt = PROMPTS[0]
    april, march = smollm2.to_single_token(" April"), smollm2.to_single_token(" March")
    logits = smollm2(prompt)[0, -1]
    for by in ("head", "neuron"):
        dla = ti.lens.direct_logit_attribution(smollm2, prompt, " April", against=" March", by=by, progress=False)
        assert_close(dla.total, (logits[april] - logits[march])[None], atol=1e-4, rtol=1e-5)
        assert dla.approximation()["max_abs_centring"] == 0  # RMSNorm: nothing to centre


@pytest.mark.real_model
def test_smollm2_tuned_lens_beats_the_logit_lens_on_heldout_text(smollm2) -> None:
    from tl_interp.models.saes.corpus import chunk_tokens, pydoc_text

    translators = load_translators(NAME)
    chunks = chunk_tokens(smollm2.tokenizer, pydoc_text("heldout"), 128)[16:18]  # not the card's 16 chunks
    logit = ti.lens.logit_lens(smollm2, chunks, positions=From(2), top_k=1, progress=False)
    tuned = ti.lens.tuned_lens(smollm2, chunks, translators=translators, positions=From(2), top_k=1, progress=False)
    mask = logit.extras["mask"][None]
    mean = lambda r: torch.where(mask, r.values.double(), 0.0).sum((1, 2)) / mask.sum()  # noqa: E731
    a, b = mean(logit), mean(tuned)
    assert bool((b[:-1] < a[:-1]).all()), list(zip(a.tolist(), b.tolist()))
    assert abs(float(a[-1])) < 1e-4 and abs(float(b[-1])) < 1e-4
