"""ti.geometry.layer_angles equals a per-sentence loop, never samples padding, and tests like scipy."""

import math
import tempfile

import pytest
import scipy.stats
import torch
from torch.testing import assert_close

import tl_interp as ti
from tl_interp import geometry
from tl_interp.errors import InputError, OptionError, SelectionError
from tl_interp.positions import real_bounds

geometry = ti.geometry
LENGTHS = [6, 4, 7, 5, 3]


def states_and_mask(side: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(layers + 1, batch, pos, d) states, NaN on every pad position, and the real-token mask."""
    width = max(LENGTHS)
    mask = torch.zeros(len(LENGTHS), width, dtype=torch.bool)
    for i, n in enumerate(LENGTHS):
        if side == "left":
            mask[i, width - n:] = True
        else:
            mask[i, :n] = True
    states = torch.randn(5, len(LENGTHS), width, 16, generator=torch.Generator().manual_seed(seed))
    states[:, ~mask] = float("nan")
    return states, mask


def targets_for(mask: torch.Tensor) -> torch.Tensor:
    first, last = real_bounds(mask)
    return first + 1 + (last - first - 1) // 2  # a real position with a real one before it


def loop_angles(states, positions) -> torch.Tensor:
    """The seed's loop: acos of the clamped cosine between consecutive layers, sentence by sentence."""
    out = torch.zeros(states.shape[0] - 1, states.shape[1], dtype=torch.float64)
    for s in range(states.shape[1]):
        for layer in range(1, states.shape[0]):
            v, u = states[layer - 1, s, positions[s]].double(), states[layer, s, positions[s]].double()
            cos = float(torch.dot(v, u) / (v.norm() * u.norm()))
            out[layer - 1, s] = math.degrees(math.acos(max(-1.0, min(1.0, cos))))
    return out


@pytest.mark.parametrize("side", ["left", "right"])
def test_angles_equal_a_per_sentence_loop_and_the_baseline_reads_only_real_tokens(side) -> None:
    states, mask = states_and_mask(side)
    targets = targets_for(mask)
    res = geometry.layer_angles(states, positions=targets, attention_mask=mask, seed=4)
    assert_close(res.angles["target"], loop_angles(states, targets))
    assert_close(res.angles["other"], loop_angles(states, targets - 1))
    assert bool(torch.isfinite(res.angles["shuffled"]).all())  # a pad position would give NaN
    rows = torch.arange(len(LENGTHS))[None, :, None]
    assert bool(mask[rows, res.extras["shuffled_positions"]].all())
    assert res.extras["shuffled_layers"].max() == 4 and res.extras["shuffled_layers"].min() == 0
    again = geometry.layer_angles(states, positions=targets, attention_mask=mask, seed=4)
    assert torch.equal(again.angles["shuffled"], res.angles["shuffled"])
    assert res.provenance.seed == 4


@pytest.mark.parametrize("correction", ["bonferroni", "holm", "fdr_bh"])
def test_corrected_p_values_equal_scipy_ttest_rel_and_the_correction_by_hand(correction) -> None:
    states, mask = states_and_mask("right", seed=1)
    res = geometry.layer_angles(states, positions=targets_for(mask), attention_mask=mask, correction=correction)
    for comparison, other in (("target vs other", "other"), ("target vs shuffled", "shuffled")):
        ref = scipy.stats.ttest_rel(res.angles["target"].numpy(), res.angles[other].numpy(), axis=1)
        p = torch.as_tensor(ref.pvalue)
        assert_close(res.statistics[comparison], torch.as_tensor(ref.statistic))
        assert_close(res.raw_p_values[comparison], p)
        m = len(p)
        if correction == "bonferroni":
            by_hand = (p * m).clamp(max=1.0)
        elif correction == "holm":
            order = p.argsort()
            stepped = torch.cummax((m - torch.arange(m)) * p[order], 0).values.clamp(max=1.0)
            by_hand = torch.empty_like(p).scatter_(0, order, stepped)
        else:
            by_hand = torch.as_tensor(scipy.stats.false_discovery_control(p.numpy(), method="bh"))
        assert_close(res.p_values[comparison], by_hand)
        diff = res.angles["target"] - res.angles[other]
        assert_close(res.effect_sizes[comparison], diff.mean(1) / diff.std(1))


def test_bad_positions_and_too_few_prompts_fail_first() -> None:
    states, mask = states_and_mask("right")
    with pytest.raises(SelectionError, match=r"others positions \[-1\] \(rows \[0\]\) are outside"):
        geometry.layer_angles(states, positions=torch.tensor([0, 1, 1, 1, 1]), attention_mask=mask)
    with pytest.raises(SelectionError, match=r"positions lands on padding in rows \[1, 4\]"):
        geometry.layer_angles(states, positions=torch.tensor([5, 5, 5, 4, 5]), attention_mask=mask)
    with pytest.raises(InputError, match="needs at least 3 prompts, got 2"):
        geometry.layer_angles(states[:, :2], positions=torch.tensor([1, 1]), attention_mask=mask[:2])
    with pytest.raises(OptionError, match="correction='sidak'"):
        geometry.layer_angles(states, positions=torch.tensor([1, 1, 1, 1, 1]), attention_mask=mask, correction="sidak")
    with pytest.raises(InputError, match="layer_angles: the states at real positions has 800 NaN/Inf entries"):
        geometry.layer_angles(states, positions=torch.tensor([1, 1, 1, 1, 1]))  # no mask: padding counts as real


def test_angle_inputs_read_every_layer_with_padding_as_if_each_sentence_ran_alone() -> None:
    from tl_interp.models import load, make_tiny_hf_dir

    model = load(make_tiny_hf_dir(tempfile.mkdtemp(), "gpt2"), device="cpu")
    token = model.to_str_tokens(" cat", prepend_bos=False)[0]
    prompts = ["the cat sat", "a small black cat ran away", "my cat", "every cat here sleeps"]
    inputs = geometry.angle_inputs(model, prompts, token, memory_mb=1e-6, progress=False)
    assert inputs.states.shape[:2] == (model.cfg.n_layers + 1, 4)
    assert inputs.names[-1] == f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    for i, prompt in enumerate(prompts):
        _, cache = model.run_with_cache(prompt, names_filter=lambda n: n in inputs.names)
        alone = torch.stack([cache[n][0] for n in inputs.names])
        assert_close(inputs.states[:, i][:, inputs.attention_mask[i]], alone, atol=1e-5, rtol=1e-4)
        assert inputs.batch.str_tokens[i][int(inputs.positions[i])] == token
    res = geometry.layer_angles(inputs.states, positions=inputs.positions, attention_mask=inputs.attention_mask,
                                model_id=inputs.model_id)
    assert res.figure().data and res.angles["shuffled"].shape == (model.cfg.n_layers, 4)
    with pytest.raises(SelectionError, match=r"rows \[1\] do not contain the token"):
        geometry.angle_inputs(model, ["the cat", "no such word"], token, progress=False)


# -- issue 10's reliability probes (formerly tests/test_reliability_statistics.py), beside the module they test --
def gaussian(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_layer_angles_with_others_equal_to_targets_names_the_positions_not_nan_p_values() -> None:
    states = gaussian(3, 5, 6, 4, seed=6)
    t = torch.tensor([1, 2, 3, 4, 5])
    with pytest.raises(SelectionError, match=r"others equal positions in rows \[0, 1, 2, 3, 4\] \(5 of 5 prompts\).*"
                                             r"pass others= positions that differ from positions="):
        geometry.layer_angles(states, positions=t, others=t)
