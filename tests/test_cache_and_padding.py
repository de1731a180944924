"""Caching keeps only what was asked; per-row positions make batched runs equal unbatched ones."""

import pytest
import torch
from torch.testing import assert_close

from tests.conftest import Case
from tl_interp import HookNameError, SelectionError, hooks, site


def test_cache_keeps_only_the_selected_positions_heads_and_rows(tcase: Case) -> None:
    _, full = tcase.model.run_with_cache(tcase.inputs)
    z, pattern, resid = tcase.heads, site("pattern", 1), tcase.resid
    caches = [hooks.cache(z, positions=[0, -1], heads=2), hooks.cache(pattern, heads=[1, 3], positions=-1),
              hooks.cache(resid, rows=[2, 0], positions=slice(1, 4), dtype=torch.float64, device="cpu")]
    sum(caches).run(tcase.model, tcase.inputs)
    assert torch.equal(caches[0][z], full[z][:, [0, -1], 2])
    assert torch.equal(caches[1][pattern], full[pattern][:, [1, 3], -1])
    assert caches[2][resid].dtype == torch.float64
    assert torch.equal(caches[2][resid], full[resid][[2, 0], 1:4].double())
    assert set(caches[0].store) == {z}


def test_a_cache_forgets_the_previous_run(tcase: Case) -> None:
    c = hooks.cache(tcase.resid)
    first = c.collect(tcase.model, tcase.inputs)[tcase.resid].clone()
    second = c.collect(tcase.model, tcase.inputs.flip(1))[tcase.resid]
    assert not torch.equal(first, second)
    with pytest.raises(HookNameError, match="the cache holds no activation for 'nope'"):
        c["nope"]


def _right_padded(lengths: list[int], vocab: int, pad: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    rows = [torch.randint(1, vocab, (n,), generator=gen) for n in lengths]
    tokens = torch.full((len(rows), max(lengths)), pad)
    mask = torch.zeros_like(tokens)
    for i, row in enumerate(rows):
        tokens[i, : len(row)], mask[i, : len(row)] = row, 1
    return tokens, mask, rows


def test_steering_the_last_real_token_batched_equals_unbatched(tcase: Case) -> None:
    tokens, mask, rows = _right_padded([7, 4, 5], vocab=61)
    last = mask.sum(1) - 1  # the last non-pad token of each row
    vector = torch.randn(tcase.model.cfg.d_model)
    name = site("resid_post", 0)
    steer = hooks.add(name, vector, scale=5.0, positions=last)
    read = hooks.cache(site("resid_post", 1), positions=last)
    batched = (steer + read).run(tcase.model, tokens, attention_mask=mask)
    for i, row in enumerate(rows):
        one_read = hooks.cache(site("resid_post", 1), positions=-1)
        alone = (hooks.add(name, vector, scale=5.0, positions=-1) + one_read).run(tcase.model, row[None])
        assert_close(batched[i, last[i]], alone[0, -1], rtol=1e-4, atol=1e-4)
        assert_close(read[site("resid_post", 1)][i], one_read[site("resid_post", 1)][0], rtol=1e-4, atol=1e-4)


def test_per_row_positions_must_match_the_batch(tcase: Case) -> None:
    with pytest.raises(SelectionError, match=r"add at blocks.1.hook_resid_pre: per-row positions need one index per row, shape \(3,\)"):
        hooks.add(tcase.resid, torch.zeros(tcase.model.cfg.d_model), positions=torch.tensor([1, 2])).run(
            tcase.model, tcase.inputs)


def test_boolean_position_masks(tcase: Case) -> None:
    seq = tcase.inputs.shape[1]
    keep = torch.zeros(seq, dtype=torch.bool)
    keep[[1, 3]] = True
    after = hooks.cache(tcase.resid)
    (hooks.zero_ablate(tcase.resid, positions=keep) + after).run(tcase.model, tcase.inputs)
    assert after[tcase.resid][:, [1, 3]].abs().sum() == 0 and after[tcase.resid][:, 0].abs().sum() > 0
    two_d = torch.zeros(tcase.inputs.shape, dtype=torch.bool)
    two_d[0, 2] = two_d[2, 5] = True
    (hooks.zero_ablate(tcase.resid, positions=two_d) + after).run(tcase.model, tcase.inputs)
    zeroed = after[tcase.resid].abs().sum(-1) == 0
    assert torch.equal(zeroed, two_d)
