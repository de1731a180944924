"""Every hook factory makes exactly the edit it promises, on every model family.

Each test runs the model twice: once under a tl_interp intervention, once under a
hand-written TransformerLens hook doing the same edit, and compares the edited activation
(read back by a cache placed after the edit) and the model's output.
"""

import inspect
import re
from collections.abc import Callable
from typing import Any

import pytest
import scipy.stats
import torch
from torch.testing import assert_close

import tl_interp as ti
from tests.conftest import Case, ToyMLP, bridge_llama, no_hooks_attached
from tests.reliability import no_forward, tiny, tl_run
from tl_interp import Intervention, hooks, site
from tl_interp.errors import HookNameError, SelectionError, ShapeError

Manual = Callable[[torch.Tensor], torch.Tensor]


def run_both(case: Case, iv: Intervention, name: str, manual: Manual, *, exact: bool = True) -> None:
    """Compare ``iv`` against a hand-written hook applying ``manual`` at ``name``."""
    after = hooks.cache(name)
    ours = (iv + after).run(case.model, case.inputs)
    seen: dict[str, torch.Tensor] = {}

    def hand_written(act: torch.Tensor, hook: Any) -> torch.Tensor:
        return manual(act.clone())

    def grab(act: torch.Tensor, hook: Any) -> None:
        seen["act"] = act.detach().clone()

    theirs = case.model.run_with_hooks(case.inputs, fwd_hooks=[(name, hand_written), (name, grab)])
    tol = dict(rtol=0, atol=0) if exact else dict(rtol=1e-5, atol=1e-5)
    assert_close(after[name], seen["act"], **tol)
    assert_close(ours, theirs, **tol)
    # the edit did something, so the comparison is not vacuous
    assert not torch.equal(ours, case.model(case.inputs))


def test_zero_ablate_positions(case: Case) -> None:
    if case.family == "toy":
        def manual(a): a[[0, -1]] = 0; return a  # noqa: E702
        run_both(case, hooks.zero_ablate(case.resid, rows=[0, -1]), case.resid, manual)
        return

    def manual(a): a[:, [0, -1]] = 0; return a  # noqa: E702
    run_both(case, hooks.zero_ablate(case.resid, positions=[0, -1]), case.resid, manual)


def test_zero_ablate_heads_at_one_position(tcase: Case) -> None:
    def manual(a): a[:, -2, 1] = 0; return a  # noqa: E702
    run_both(tcase, hooks.zero_ablate(tcase.heads, heads=[1], positions=-2), tcase.heads, manual)


def test_zero_ablate_kv_head_counts_key_value_heads(tcase: Case) -> None:
    def manual(a): a[:, :, -1] = 0; return a  # noqa: E702
    run_both(tcase, hooks.zero_ablate(tcase.kv, heads=-1), tcase.kv, manual)


def test_zero_ablate_neurons(case: Case) -> None:
    if case.mlp is None:
        pytest.skip("attention-only model has no MLP")

    def manual(a): a[..., [0, 3, 5]] = 0; return a  # noqa: E702
    run_both(case, hooks.zero_ablate(case.mlp, neurons=[0, 3, 5]), case.mlp, manual)


def test_zero_ablate_rows_and_slice_positions(tcase: Case) -> None:
    def manual(a): a[1, 2:5] = 0; return a  # noqa: E702
    run_both(tcase, hooks.zero_ablate(tcase.resid, rows=1, positions=slice(2, 5)), tcase.resid, manual)


def test_mean_ablate_per_feature(case: Case) -> None:
    acts = hooks.cache(case.resid).collect(case.model, case.inputs)[case.resid]
    mean = acts.mean(0) if case.family == "toy" else acts.mean((0, 1))

    if case.family == "toy":
        def manual(a): a[:] = mean; return a  # noqa: E702
        run_both(case, hooks.mean_ablate(case.resid, mean), case.resid, manual)
        return

    def manual(a): a[:, 3] = mean; return a  # noqa: E702
    run_both(case, hooks.mean_ablate(case.resid, mean, positions=3), case.resid, manual)


def test_resample_ablate_draws_reproducibly_from_the_reference(case: Case) -> None:
    reference = torch.randn(10, *hooks.cache(case.resid).collect(case.model, case.inputs)[case.resid].shape[1:])
    after = hooks.cache(case.resid)
    (hooks.resample_ablate(case.resid, reference, seed=7) + after).run(case.model, case.inputs)
    for row in after[case.resid]:  # every row is replaced by one whole reference row
        assert any(torch.equal(row, ref) for ref in reference)
    other_seed = hooks.resample_ablate(case.resid, reference, seed=8).run(case.model, case.inputs)
    same_seed = hooks.resample_ablate(case.resid, reference, seed=7).run(case.model, case.inputs)
    assert torch.equal(same_seed, hooks.resample_ablate(case.resid, reference, seed=7).run(case.model, case.inputs))
    assert not torch.equal(same_seed, other_seed)


def test_patch_heads_at_positions_from_a_source_run(tcase: Case) -> None:
    source_inputs = torch.roll(tcase.inputs, 1, dims=1)
    source = hooks.cache(tcase.heads).collect(tcase.model, source_inputs)

    def manual(a):
        a[:, [1, 4], 2] = source[tcase.heads][:, [1, 4], 2]
        return a

    run_both(tcase, hooks.patch(tcase.heads, source, positions=[1, 4], heads=2), tcase.heads, manual)


def test_patch_accepts_transformer_lens_activation_cache(tcase: Case) -> None:
    _, tl_cache = tcase.model.run_with_cache(torch.roll(tcase.inputs, 2, dims=1))

    def manual(a): a[:, -1] = tl_cache[tcase.resid][:, -1]; return a  # noqa: E702
    run_both(tcase, hooks.patch(tcase.resid, tl_cache, positions=-1), tcase.resid, manual)


def test_add_scaled_vector_at_last_position(case: Case) -> None:
    width = hooks.cache(case.resid).collect(case.model, case.inputs)[case.resid].shape[-1]
    vector = torch.randn(width)
    if case.family == "toy":
        def manual(a): return a + 3.0 * vector
        run_both(case, hooks.add(case.resid, vector, scale=3.0), case.resid, manual)
        return

    def manual(a): a[:, -1] += 3.0 * vector; return a  # noqa: E702
    run_both(case, hooks.add(case.resid, vector, scale=3.0, positions=-1), case.resid, manual)


def test_add_with_scale_zero_changes_nothing_and_a_small_scale_adds_exactly_its_share(case: Case) -> None:
    width = hooks.cache(case.resid).collect(case.model, case.inputs)[case.resid].shape[-1]
    vector = torch.randn(width)
    out = hooks.add(case.resid, vector, scale=0.0).run(case.model, case.inputs)
    assert torch.equal(out, case.model(case.inputs))
    # the same hook at scale 1/64 is not a no-op: it adds exactly vector / 64 (a power of two: exact),
    # so the bit-identical output above is the zero scale's doing, not a hook that never edits
    run_both(case, hooks.add(case.resid, vector, scale=1 / 64), case.resid, lambda a: a + vector / 64)


def test_scale_heads(tcase: Case) -> None:
    def manual(a): a[:, :, 0] *= 0.5; return a  # noqa: E702
    run_both(tcase, hooks.scale(tcase.heads, 0.5, heads=0), tcase.heads, manual)


def _projector(basis: torch.Tensor) -> torch.Tensor:
    q, _ = torch.linalg.qr(basis.T.double())
    return (q @ q.T).float()


def test_project_out_and_onto_are_exact_projections(case: Case) -> None:
    width = hooks.cache(case.resid).collect(case.model, case.inputs)[case.resid].shape[-1]
    basis = torch.randn(3, width)
    proj = _projector(basis)
    run_both(case, hooks.project_out(case.resid, basis), case.resid, lambda a: a - a @ proj, exact=False)
    run_both(case, hooks.project_onto(case.resid, basis), case.resid, lambda a: a @ proj, exact=False)


def test_project_out_then_onto_the_same_basis_gives_zero(case: Case) -> None:
    width = hooks.cache(case.resid).collect(case.model, case.inputs)[case.resid].shape[-1]
    basis = torch.randn(4, width) * 10
    after = hooks.cache(case.resid)
    (hooks.project_out(case.resid, basis) + hooks.project_onto(case.resid, basis) + after).run(case.model, case.inputs)
    assert after[case.resid].abs().max() <= 1e-5 * max(1.0, float(basis.abs().max()))


def test_project_on_head_site_acts_on_d_head(tcase: Case) -> None:
    direction = torch.randn(8)
    unit = direction / direction.norm()

    def manual(a):
        a[:, :, 3] -= (a[:, :, 3] @ unit)[..., None] * unit
        return a

    run_both(tcase, hooks.project_out(tcase.heads, direction, heads=3), tcase.heads, manual, exact=False)


def test_set_component(case: Case) -> None:
    width = hooks.cache(case.resid).collect(case.model, case.inputs)[case.resid].shape[-1]
    direction = torch.randn(width)
    unit = direction / direction.norm()

    def manual(a): return a + (2.5 - a @ unit)[..., None] * unit
    run_both(case, hooks.set_component(case.resid, direction, 2.5), case.resid, manual, exact=False)
    after = hooks.cache(case.resid)
    (hooks.set_component(case.resid, direction, 2.5) + after).run(case.model, case.inputs)
    assert_close(after[case.resid] @ unit, torch.full(after[case.resid].shape[:-1], 2.5), rtol=0, atol=1e-4)


def test_orthonormal_basis_keeps_the_span_of_dependent_directions() -> None:
    a, b = torch.randn(2, 16)
    q = hooks.orthonormal_basis(torch.stack([a, b, a + 2 * b]))
    assert q.shape == (2, 16)
    assert_close(q @ q.T, torch.eye(2, dtype=q.dtype))


# -- issue 10's reliability probes (formerly tests/test_reliability_hooks.py), beside the module they test --
TOKENS = torch.randint(1, 61, (2, 5), generator=torch.Generator().manual_seed(0))
_BRIDGE: list[Any] = []


def bridge(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if not _BRIDGE:
        _BRIDGE.append(bridge_llama(str(tmp_path_factory.mktemp("bridge"))))
    return _BRIDGE[0]


def test_with_the_switch_on_the_result_hook_edits_exactly_that_head() -> None:
    # probe 1, correct behaviour: with use_attn_result the same edit is exact
    model = tiny()  # use_attn_result=True
    head_0 = lambda a, hook: torch.cat([a[:, :, :1] * 0, a[:, :, 1:]], 2)  # noqa: E731
    expected = tl_run(model, TOKENS, [(site("result", 0), head_0)])
    assert_close(hooks.zero_ablate(site("result", 0), heads=0).run(model, TOKENS), expected, rtol=0, atol=0)


def test_a_name_filter_skips_points_that_never_fire_and_edits_the_rest() -> None:
    # probe 1: "a predicate means wherever it applies"
    model = tiny(use_attn_result=False)
    iv = hooks.zero_ablate(lambda n: n.endswith(("attn.hook_result", "0.hook_resid_pre")))
    expected = tl_run(model, TOKENS, [(site("resid_pre", 0), lambda a, hook: a * 0)])
    assert_close(iv.run(model, TOKENS), expected, rtol=0, atol=0)


def test_a_name_filter_matching_only_silent_points_is_refused() -> None:
    model = tiny(use_attn_result=False)
    with no_forward(model), pytest.raises(HookNameError, match="never fires"):
        hooks.zero_ablate(lambda n: n.endswith("attn.hook_result")).run(model, TOKENS)


def test_on_a_bridge_a_point_that_never_fired_is_an_error_after_run(tmp_path_factory: pytest.TempPathFactory) -> None:
    # probe 1 on TransformerBridge: silent points are only known after a forward pass
    model = bridge(tmp_path_factory)
    tokens = torch.randint(4, 100, (2, 5))
    message = r"zero-ablate at blocks\.0\.attn\.hook_result: the hook point\(s\).*never fired"
    with pytest.raises(HookNameError, match=message):
        hooks.zero_ablate("blocks.0.attn.hook_result").run(model, tokens)
    assert no_hooks_attached(model)


def test_on_a_bridge_applied_reports_a_point_that_never_fired(tmp_path_factory: pytest.TempPathFactory) -> None:
    # own probe: the same under .applied() (the check runs when the block exits)
    model = bridge(tmp_path_factory)
    with pytest.raises(HookNameError, match="never fired"):
        with hooks.zero_ablate("blocks.1.attn.hook_result").applied(model):
            model(torch.randint(4, 100, (2, 5)))
    assert no_hooks_attached(model) and "forward" not in model.__dict__


# -- issue item 5: TransformerBridge aliases --------------------------------------------------
def test_bridge_aliases_in_a_list_are_edited_once(tmp_path_factory: pytest.TempPathFactory) -> None:
    # probe 5: blocks.1.hook_in and blocks.1.hook_resid_pre name one HookPoint
    model = bridge(tmp_path_factory)
    tokens = torch.randint(4, 100, (2, 5))
    v = torch.randn(32)
    once = tl_run(model, tokens, [("blocks.1.hook_resid_pre", lambda a, hook: a + v)])
    both = hooks.add(["blocks.1.hook_in", "blocks.1.hook_resid_pre"], v).run(model, tokens)
    assert_close(both, once, rtol=0, atol=0)


def test_bridge_aliases_matched_by_a_filter_are_edited_once(tmp_path_factory: pytest.TempPathFactory) -> None:
    # probe 5 with a predicate
    model = bridge(tmp_path_factory)
    tokens = torch.randint(4, 100, (2, 5))
    once = tl_run(model, tokens, [("blocks.1.hook_resid_pre", lambda a, hook: a * 3)])
    iv = hooks.scale(lambda n: n in ("blocks.1.hook_in", "blocks.1.hook_resid_pre"), 3.0)
    assert_close(iv.run(model, tokens), once, rtol=0, atol=0)


def test_a_cache_keeps_every_alias(tmp_path_factory: pytest.TempPathFactory) -> None:
    # probe 5, reads: a cache may hold both names of one point (nothing is applied twice)
    model = bridge(tmp_path_factory)
    store = hooks.cache(["blocks.1.hook_in", "blocks.1.hook_resid_pre"]).collect(model, torch.randint(4, 100, (2, 5)))
    assert set(store) == {"blocks.1.hook_in", "blocks.1.hook_resid_pre"}
    assert torch.equal(store["blocks.1.hook_in"], store["blocks.1.hook_resid_pre"])


def test_a_name_listed_twice_is_edited_once() -> None:
    # own probe: duplicated names
    model = tiny()
    v = torch.randn(32)
    expected = tl_run(model, TOKENS, [(site("resid_pre", 1), lambda a, hook: a + v)])
    assert_close(hooks.add([site("resid_pre", 1)] * 2, v).run(model, TOKENS), expected, rtol=0, atol=0)


def test_an_empty_list_of_names_and_a_filter_matching_nothing_are_refused() -> None:
    # own probes: name filters matching nothing, empty lists of names
    with no_forward(tiny()):
        with pytest.raises(HookNameError, match="empty list of hook names"):
            hooks.zero_ablate([]).run(tiny(), TOKENS)
        with pytest.raises(HookNameError, match="matches none of the model's"):
            hooks.zero_ablate(lambda n: n.endswith("hook_nothing")).run(tiny(), TOKENS)


# -- custom modules ------------------------------------------------------------------------
def test_heads_on_a_custom_modules_site_is_refused_before_any_forward_pass() -> None:
    # unclear error: "heads= on a custom module's site reporting the wrong axes"
    model = ToyMLP()
    pairs = torch.randint(0, 12, (3, 2))
    with no_forward(model), pytest.raises(SelectionError, match="does not know the layout of 'hook_hidden'"):
        hooks.zero_ablate("hook_hidden", heads=0).run(model, pairs)


def test_neurons_on_a_custom_modules_site_edit_the_last_axis() -> None:
    # own probe, correct behaviour: neurons= on a custom site is its feature axis
    model = ToyMLP()
    pairs = torch.randint(0, 12, (3, 2))

    def zero_3(a: torch.Tensor, hook: Any) -> torch.Tensor:
        out = a.clone()
        out[..., 3] = 0
        return out

    expected = tl_run(model, pairs, [("hook_hidden", zero_3)])
    assert_close(hooks.zero_ablate("hook_hidden", neurons=3).run(model, pairs), expected, rtol=0, atol=0)


def test_a_source_of_another_length_is_refused_without_talking_about_generation() -> None:
    # own probe: a patch source cached on a longer run is not silently cut to the activation
    model = tiny()
    message = r"covers 6 positions; the activation is at positions 0\.\.4 \(give the source"
    with pytest.raises(ShapeError, match=message):
        hooks.patch(site("resid_pre", 1), torch.randn(2, 6, 32)).run(model, TOKENS)
    assert no_hooks_attached(model)


# -- documentation -------------------------------------------------------------------------
def test_hook_docstrings_name_only_functions_that_exist() -> None:
    # unclear error: "the mean_ablate docstring names a function that doesn't exist"
    missing = []
    for name in hooks.__all__:
        doc = inspect.getdoc(getattr(hooks, name)) or ""
        for ref in re.findall(r"\bti\.([a-z_]+(?:\.[A-Za-z_]+)*)\(", doc):
            obj: Any = ti
            for part in ref.split("."):
                obj = getattr(obj, part, None)
            if obj is None:
                missing.append(f"hooks.{name}: ti.{ref}")
    assert not missing, missing


# -- issue 10's reliability probes (formerly tests/test_reliability_studies.py), beside the module they test --
def test_a_separate_reference_set_is_drawn_from_uniformly_with_the_seed() -> None:
    # probe 4, correct behaviour: a reference of another size may give any of its rows. Checked as
    # properties of what the model sees, not against a copy of the implementation's RNG call:
    # each row becomes one whole reference row, every row is drawn in near-equal shares
    # (chi-square), the same seed repeats the draws and another seed changes them.
    model, name = tiny(), site("resid_pre", 1)
    tokens = torch.randint(1, 61, (40, 6), generator=torch.Generator().manual_seed(5))
    reference = torch.randn(7, 6, 32, generator=torch.Generator().manual_seed(6))

    def drawn_rows(seed: int) -> list[int]:
        seen = hooks.cache(name)
        (hooks.resample_ablate(name, reference, seed=seed) + seen).run(model, tokens)
        rows = [[j for j in range(7) if torch.equal(act, reference[j])] for act in seen[name]]
        assert all(len(r) == 1 for r in rows), "every ablated row is exactly one reference row"
        return [r[0] for r in rows]

    draws = {seed: drawn_rows(seed) for seed in range(10)}
    counts = torch.bincount(torch.tensor(sum(draws.values(), [])), minlength=7)
    assert int(counts.min()) > 0, f"some reference rows are never drawn: {counts.tolist()}"
    assert scipy.stats.chisquare(counts.numpy()).pvalue > 1e-3, f"draws are far from uniform: {counts.tolist()}"
    assert drawn_rows(3) == draws[3] and draws[3] != draws[4]
    got = hooks.resample_ablate(name, reference, seed=3).run(model, tokens)  # the output follows the draws
    assert_close(got, tl_run(model, tokens, [(name, lambda a, hook: reference[draws[3]])]), rtol=0, atol=0)
