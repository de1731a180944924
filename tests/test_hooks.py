"""Every hook factory makes exactly the edit it promises, on every model family.

Each test runs the model twice: once under a tl_interp intervention, once under a
hand-written TransformerLens hook doing the same edit, and compares the edited activation
(read back by a cache placed after the edit) and the model's output.
"""

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.testing import assert_close

from tests.conftest import Case
from tl_interp import Intervention, hooks

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
