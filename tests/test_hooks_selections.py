"""Selections (positions, heads, neurons, rows) that cannot be honoured are refused; the
others edit exactly what TransformerLens's hand-written hooks edit."""

from typing import Any

import pytest
import torch
from torch.testing import assert_close

from tests.conftest import no_hooks_attached
from tests.reliability import at_positions, no_forward, ordinal, tiny, tl_run
from tl_interp import hooks, site
from tl_interp.errors import SelectionError, TypeCheckError, UnsupportedError
from tl_interp.positions import From, first


# -- issue 10's reliability probes (formerly tests/test_reliability_selections.py) --
TOKENS = torch.randint(1, 61, (2, 5), generator=torch.Generator().manual_seed(0))


# -- issue item 11: selections that select nothing, out of range --------------------------
@pytest.mark.parametrize("positions, message", [
    (slice(10, 20), "slice 10:20 selects nothing of 5 positions"),  # probe 11: out-of-range slice
    (From(9), r"From\(9\) selects nothing in rows \[0, 1\]"),  # probe 11: From(k) past the end
    (7, "position 7 is out of range; the site has 5 positions"),  # probe 11: ints are range-checked
    ([0, 5], "position 5 is out of range"),  # probe 11: lists are range-checked
    (-6, "position -6 is out of range"),  # own probe: negative index past the start
    ([], r"positions=\[\] selects nothing"),  # own probe: empty list
    (slice(0, 3, 0), "step must be a positive int"),  # own probe: zero step
    (slice(None, None, -1), "step must be a positive int"),  # own probe: reversed slice
    (torch.tensor([1, 9]), r"per-row positions \[1, 9\] are out of range"),  # own probe
    (torch.zeros(2, 4, dtype=torch.bool), r"position mask has shape \(2, 4\)"),  # own probe
])
def test_position_selections_that_cannot_be_honoured_are_refused(positions: Any, message: str) -> None:
    model = tiny()
    with pytest.raises(SelectionError, match=message):
        hooks.zero_ablate(site("resid_pre", 0), positions=positions).run(model, TOKENS)
    assert no_hooks_attached(model)


@pytest.mark.parametrize("positions", [7, [0, 5], -6, [], slice(0, 3, 0)])
def test_literal_positions_are_checked_before_any_forward_pass(positions: Any) -> None:
    # probe 11: "ints and lists are range-checked" -- before the forward pass, when the length is known
    model = tiny()
    with no_forward(model), pytest.raises(SelectionError):
        hooks.zero_ablate(site("resid_pre", 0), positions=positions).run(model, TOKENS)


@pytest.mark.parametrize("field, value, message", [
    ("heads", 4, "head 4 is out of range; the site has 4 heads"),
    ("heads", [], r"heads=\[\] selects nothing"),  # own probe: empty lists are no-ops otherwise
    ("neurons", [], r"neurons=\[\] selects nothing"),
    ("rows", [], r"rows=\[\] selects nothing"),
    ("rows", 2, "row 2 is out of range; the site has 2 rows"),
    ("heads", torch.tensor([], dtype=torch.long), "empty index tensor"),
])
def test_index_selections_that_cannot_be_honoured_are_refused(field: str, value: Any, message: str) -> None:
    where = site("mlp_post", 0) if field == "neurons" else site("z", 0)
    with pytest.raises(SelectionError, match=message):
        hooks.zero_ablate(where, **{field: value}).run(tiny(), TOKENS)


def test_a_partly_out_of_range_slice_is_clipped_like_python() -> None:
    # own probe: slice(3, 100) means positions 3 and 4 of 5 (Python's slice semantics)
    model = tiny()
    expected = tl_run(model, TOKENS, [(site("resid_pre", 1), at_positions([3, 4], lambda a: a * 0))])
    assert_close(hooks.zero_ablate(site("resid_pre", 1), positions=slice(3, 100)).run(model, TOKENS), expected,
                 rtol=0, atol=0)


def test_negative_indices_count_from_the_end() -> None:
    # own probe: positions=-1 is the last position, heads=-1 the last head, neurons=-1 the last neuron
    model = tiny()

    def last_head(a: torch.Tensor, hook: Any) -> torch.Tensor:
        out = a.clone()
        out[:, 4, 3] = 0
        return out

    def last_neuron(a: torch.Tensor, hook: Any) -> torch.Tensor:
        out = a.clone()
        out[..., 63] = 0
        return out

    expected = tl_run(model, TOKENS, [(site("z", 1), last_head), (site("mlp_post", 0), last_neuron)])
    iv = hooks.zero_ablate(site("z", 1), positions=-1, heads=-1) + hooks.zero_ablate(site("mlp_post", 0), neurons=-1)
    assert_close(iv.run(model, TOKENS), expected, rtol=0, atol=0)


def test_gqa_key_and_value_sites_count_key_value_heads() -> None:
    # own probe: GQA k/v heads (n_key_value_heads=2 of 4 query heads)
    model = tiny(act_fn="silu", normalization_type="RMS", positional_embedding_type="rotary", rotary_dim=8,
                 gated_mlp=True, final_rms=True, n_key_value_heads=2)

    def kv_head_1(a: torch.Tensor, hook: Any) -> torch.Tensor:
        out = a.clone()
        out[:, :, 1] = 0
        return out

    expected = tl_run(model, TOKENS, [(site("k", 0), kv_head_1)])
    assert_close(hooks.zero_ablate(site("k", 0), heads=1).run(model, TOKENS), expected, rtol=0, atol=0)
    with no_forward(model), pytest.raises(SelectionError, match="key-value head 2 is out of range; the site has 2"):
        hooks.zero_ablate(site("v", 0), heads=2).run(model, TOKENS)
    hooks.zero_ablate(site("z", 0), heads=3).validate(model)  # z counts the 4 query heads


def test_last_follows_each_rows_padding_right_and_left() -> None:
    # probe 2 for hooks: positions="last" is each row's last real token, whichever side is padded
    model = tiny()
    tokens = torch.randint(1, 61, (2, 5), generator=torch.Generator().manual_seed(1))
    v = torch.randn(32)
    for mask, last in ((torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]), [2, 4]),
                       (torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]), [4, 4])):
        def add_last(a: torch.Tensor, hook: Any) -> torch.Tensor:
            out = a.clone()
            out[torch.arange(2), torch.tensor(last)] += v
            return out

        expected = tl_run(model, tokens, [(site("resid_pre", 1), add_last)], attention_mask=mask)
        got = hooks.add(site("resid_pre", 1), v, positions="last").run(model, tokens, attention_mask=mask)
        real = mask.bool()
        assert_close(got[real], expected[real], rtol=0, atol=0)


def test_from_k_counts_real_tokens_of_a_left_padded_row() -> None:
    # own probe: From(1) on a left-padded row starts one after its first real token
    model = tiny()
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    expected_mask = torch.tensor([[0, 0, 0, 1, 1], [0, 1, 1, 1, 1]]).bool()

    def zero_from(a: torch.Tensor, hook: Any) -> torch.Tensor:
        return torch.where(expected_mask[..., None], torch.zeros_like(a), a)

    expected = tl_run(model, TOKENS, [(site("resid_pre", 1), zero_from)], attention_mask=mask)
    got = hooks.zero_ablate(site("resid_pre", 1), positions=From(1)).run(model, TOKENS, attention_mask=mask)
    assert_close(got[mask.bool()], expected[mask.bool()], rtol=0, atol=0)


def test_padding_aware_positions_refuse_when_the_model_tokenised_the_strings_itself() -> None:
    # own probe: model(list of strings) inside .applied(): nothing knows where rows end
    model = ordinal()
    with pytest.raises(UnsupportedError, match="tokenised a list of strings itself"):
        with hooks.zero_ablate(site("resid_pre", 1), positions="last").applied(model):
            model(["one , two ,", "january , february , march ,"])
    assert no_hooks_attached(model)


def test_token_finders_must_be_resolved_first() -> None:
    # own probe: first(token) handed straight to a hook
    with pytest.raises(UnsupportedError, match=r"finder.resolve\(model, tokens\)"):
        hooks.zero_ablate(site("resid_pre", 0), positions=first(" her"))


# -- further selections ---------------------------------------------------------------------
def test_per_row_positions_edit_one_position_in_each_row() -> None:
    # own probe: a (batch,) index tensor (e.g. Tokenized.last_index), negative entries included
    model = tiny()
    index = torch.tensor([1, -1])

    def per_row(a: torch.Tensor, hook: Any) -> torch.Tensor:
        out = a.clone()
        out[0, 1] = 0
        out[1, 4] = 0
        return out

    expected = tl_run(model, TOKENS, [(site("resid_pre", 1), per_row)])
    assert_close(hooks.zero_ablate(site("resid_pre", 1), positions=index).run(model, TOKENS), expected, rtol=0, atol=0)


def test_positions_on_a_pattern_select_query_positions() -> None:
    # own probe: the pattern's position axis is the query (destination) position
    model = tiny()

    def query_2_head_1(a: torch.Tensor, hook: Any) -> torch.Tensor:
        out = a.clone()
        out[:, 1, 2, :] = 0
        return out

    expected = tl_run(model, TOKENS, [(site("pattern", 0), query_2_head_1)])
    got = hooks.zero_ablate(site("pattern", 0), heads=1, positions=2).run(model, TOKENS)
    assert_close(got, expected, rtol=0, atol=0)


def test_a_one_row_source_is_broadcast_over_the_batch() -> None:
    # own probe, correct behaviour: a (1, pos, d) source patches every row
    model = tiny()
    source = torch.randn(1, 5, 32)
    expected = tl_run(model, TOKENS, [(site("resid_pre", 1), lambda a, hook: source.expand_as(a).clone())])
    assert_close(hooks.patch(site("resid_pre", 1), source).run(model, TOKENS), expected, rtol=0, atol=0)


@pytest.mark.parametrize("make, error, message", [
    (lambda: From(-1), SelectionError, r"index must be an int >= 0, got -1"),  # own probe
    (lambda: hooks.Selection(mask_=torch.ones(2)), SelectionError, "mask= must be a boolean tensor"),  # own probe
    (lambda: hooks.zero_ablate(site("z", 0), heads="all"), SelectionError, "the only named selections"),  # own
    (lambda: hooks.zero_ablate(site("z", 0), heads=From(1)), TypeCheckError, "heads is From\\(1\\); it takes int"),
    (lambda: hooks.Selection(heads=From(1)), SelectionError, "From\\(k\\) selects positions only"),
    (lambda: hooks.zero_ablate(site("z", 0), heads=[0, 1.5]), SelectionError, "selection lists hold ints"),
])
def test_malformed_selections_are_refused_when_built(make: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        make()


def test_a_token_finder_names_rows_without_the_token() -> None:
    # own probe: first(token) on rows that lack it
    tokens = torch.tensor([[1, 7, 3], [4, 5, 6]])
    with pytest.raises(SelectionError, match=r"rows \[1\] do not contain the token 7"):
        first(7).resolve(None, tokens)


def test_padding_aware_positions_refuse_in_a_bound_hook_run_by_transformer_lens() -> None:
    # own probe: model.run_with_hooks(list of prompts, fwd_hooks=iv.bind(model)) -- TL pads, the hook can't see it
    model = ordinal()
    bound = hooks.add(site("resid_pre", 1), torch.ones(128), positions="last").bind(model)
    with pytest.raises(UnsupportedError, match="bind\\(\\) hook in TransformerLens's run_with_hooks"):
        model.run_with_hooks(["one , two ,", "january , february , march ,"], fwd_hooks=bound)
    model.reset_hooks()


def test_literal_positions_in_a_bound_hook_match_transformer_lens() -> None:
    # own probe, correct behaviour: bind() with literal positions is plain TL
    model = tiny()
    v = torch.randn(32)
    bound = hooks.add(site("resid_pre", 1), v, positions=-1).bind(model)
    expected = tl_run(model, TOKENS, [(site("resid_pre", 1), at_positions([4], lambda a: a + v))])
    assert_close(model.run_with_hooks(TOKENS, fwd_hooks=bound), expected, rtol=0, atol=0)
