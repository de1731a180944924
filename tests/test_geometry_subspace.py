"""Subspaces: any basis of a span gives the same answer; ablation through the hook equals projecting by hand."""

import numpy as np
import pytest
import torch
from torch.testing import assert_close

import tl_interp as ti
from tests.conftest import PlanRecorder, ToyMLP
from tl_interp import geometry, weights
from tl_interp.errors import HookNameError, InputError, OptionError, ShapeError



def gaussian(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_variance_explained_depends_on_the_span_not_the_basis() -> None:
    X = gaussian(200, 10) * torch.linspace(0.2, 3.0, 10, dtype=torch.float64)
    skewed = gaussian(3, 10, seed=1)
    mixed = torch.tensor([[2.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.5, -3.0, 7.0]], dtype=torch.float64) @ skewed
    q, _ = torch.linalg.qr(skewed.T)
    Xc = X - X.mean(0)
    by_hand = float(((Xc @ q) ** 2).sum() / (Xc ** 2).sum())
    assert geometry.variance_explained(X, skewed) == pytest.approx(by_hand)
    assert geometry.variance_explained(X, mixed) == pytest.approx(by_hand)
    assert geometry.variance_explained(X, torch.cat([skewed, skewed[:1] * 4])) == pytest.approx(by_hand)
    assert geometry.variance_explained(X, gaussian(10, 10, seed=2)) == pytest.approx(1.0)
    uncentred = float(((X @ q) ** 2).sum() / (X ** 2).sum())
    assert geometry.variance_explained(X, mixed, center=False) == pytest.approx(uncentred)
    assert_close(geometry.project(X, mixed), X @ q @ q.T)


def test_spectrum_and_low_rank_follow_the_svd() -> None:
    X = gaussian(30, 8) @ torch.diag(torch.tensor([5.0, 4, 3, 2, 1, 0.5, 0.1, 0.01], dtype=torch.float64))
    s = geometry.spectrum(X)
    assert_close(s.singular_values, torch.as_tensor(np.linalg.svd(X.numpy(), compute_uv=False)))
    p = s.singular_values / s.singular_values.sum()
    assert s.effective_rank == pytest.approx(float(torch.exp(-(p * p.log()).sum())))
    assert geometry.spectrum(torch.eye(6, dtype=torch.float64)).effective_rank == pytest.approx(6.0)
    assert s.rank(1.0) == 8 and s.explained.sum() == pytest.approx(1.0)
    assert s.rank(0.5) == int(np.searchsorted(np.cumsum(s.explained.numpy()), 0.5)) + 1
    for k in (1, 3, 8):
        approx = geometry.low_rank(X, k)
        assert torch.linalg.matrix_rank(approx) == k
        rest = (s.singular_values[k:] ** 2).sum().sqrt()
        assert float((X - approx).norm()) == pytest.approx(float(rest), abs=1e-9)  # Eckart-Young


def test_subspace_ablation_through_the_hook_equals_projecting_by_hand() -> None:
    toy = ToyMLP()
    pairs = torch.randint(0, 12, (40, 2), generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 12, (40,), generator=torch.Generator().manual_seed(1))
    loss = lambda logits: torch.nn.functional.cross_entropy(logits, labels)  # noqa: E731
    basis = gaussian(3, 16, seed=3).float()
    table = geometry.subspace_ablation(toy, pairs, "hook_hidden", {"three": basis, "one": basis[0]}, metric=loss,
                                       metric_name="loss", n_random=2, seed=5, progress=False)
    _, cache = toy.run_with_cache(pairs)
    hidden = cache["hook_hidden"].double()
    q, _ = torch.linalg.qr(basis.double().T)
    by_hand = loss(((hidden - hidden @ q @ q.T) @ toy.W_U.detach().double()).float())
    assert float(table.values[0]) == pytest.approx(float(by_hand), rel=1e-5)
    assert table.baseline == pytest.approx(float(loss(toy(pairs).detach())), rel=1e-6)
    assert table.extras["dims"].tolist() == [3, 1] and table.extras["random"].shape == (2, 2)
    again = geometry.subspace_ablation(toy, pairs, "hook_hidden", {"three": basis, "one": basis[0]}, metric=loss,
                                       n_random=2, seed=5, progress=False)
    assert torch.equal(again.extras["random"], table.extras["random"])
    assert "| three | 3 |" in table.markdown() and table.provenance.seed == 5
    assert_close(table.change, table.values - table.baseline)


def test_bad_subspace_requests_fail_first() -> None:
    with pytest.raises(ShapeError, match=r"basis has shape \(2, 3\).*d=4"):  # the signature ties basis to X
        geometry.variance_explained(torch.ones(5, 4), torch.ones(2, 3))
    with pytest.raises(InputError, match="X has no variance around its mean"):
        geometry.variance_explained(torch.ones(5, 4), torch.eye(4))
    with pytest.raises(ti.SelectionError, match=r"k=9; choose 1 <= k <= 4"):
        geometry.low_rank(torch.randn(6, 4), 9)
    toy = ToyMLP()
    pairs = torch.randint(0, 12, (5, 2))
    with pytest.raises(ShapeError, match="16"):
        geometry.subspace_ablation(toy, pairs, "hook_hidden", {"wrong": torch.ones(2, 7)},
                                   metric=lambda x: x.sum(), progress=False)
    with pytest.raises(HookNameError, match="did you mean 'hook_hidden'"):
        geometry.subspace_ablation(toy, pairs, "hook_hiden", {"a": torch.ones(2, 16)}, metric=lambda x: x.sum(),
                                   progress=False)
    with pytest.raises(OptionError, match="at least one subspace"):
        geometry.subspace_ablation(toy, pairs, "hook_hidden", {}, metric=lambda x: x.sum(), progress=False)
    with pytest.raises(InputError, match="the metric must return one finite number"):
        geometry.subspace_ablation(toy, pairs, "hook_hidden", {"a": torch.ones(2, 16)}, metric=lambda x: x,
                                   progress=False)


def test_subspace_ablation_binds_a_tl_interp_metric_to_its_padded_batch():
    model = ti.models.load("ordinal-4l")
    batch = ti.models.adapt(model).tokenize(["one two three", "one two three four five"])
    metric = ti.metrics.logit_diff(1, 2)
    table = ti.geometry.subspace_ablation(model, batch.tokens, "blocks.1.hook_resid_post",
                                          {"a": torch.eye(model.cfg.d_model)[:2]}, metric=metric, n_random=0,
                                          forward_kwargs={"attention_mask": batch.attention_mask}, progress=False)
    expected = metric(model(batch.tokens, attention_mask=batch.attention_mask), batch).mean()
    assert abs(float(table.baseline) - float(expected)) < 1e-6


@pytest.mark.parametrize("memory_mb", [1024.0, 0.05])
def test_subspace_ablation_of_a_transformer_runs_on_the_engine_and_equals_a_hook_loop(memory_mb: float) -> None:
    from tests.conftest import gpt2_style

    model = gpt2_style()
    tokens = torch.randint(1, 61, (3, 6), generator=torch.Generator().manual_seed(2))
    where = "blocks.1.hook_resid_pre"
    metric = lambda logits: logits[:, -1].log_softmax(-1)[:, 7].mean()  # noqa: E731  plain output -> scalar
    basis = gaussian(2, model.cfg.d_model, seed=4).float()
    executor = PlanRecorder()
    table = geometry.subspace_ablation(model, tokens, where, {"two": basis}, metric=metric, n_random=3, seed=1,
                                       memory_mb=memory_mb, executor=executor, progress=False)
    generator = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(basis.double().T)
    controls = [torch.linalg.qr(torch.randn(basis.shape, generator=generator, dtype=torch.float64).T)[0]
                for _ in range(3)]

    def ablated(q: torch.Tensor) -> float:  # TransformerLens hooks written here, one forward pass each
        def project_out(act: torch.Tensor, hook) -> torch.Tensor:
            x = act.double()
            return (x - x @ q @ q.T).to(act.dtype)

        return float(metric(model.run_with_hooks(tokens, fwd_hooks=[(where, project_out)])))

    assert table.baseline == pytest.approx(float(metric(model(tokens))), abs=1e-5)
    assert float(table.values[0]) == pytest.approx(ablated(q), abs=1e-5)
    assert_close(table.extras["random"][0], torch.tensor([ablated(c) for c in controls], dtype=torch.float64),
                 rtol=0, atol=1e-5)
    (plan,) = executor.plans
    assert len(plan.cells) == 4 and plan.options.memory_mb == memory_mb and plan.sites == (where,)
    assert table.provenance.settings["engine"]["mid_stack"] == "on"


def test_subspace_ablation_refuses_what_its_runner_cannot_honour_before_any_forward_pass() -> None:
    from tests.conftest import gpt2_style
    from tests.reliability import no_forward
    from tl_interp.errors import UnsupportedError

    toy, pairs = ToyMLP(), torch.randint(0, 12, (5, 2))
    with no_forward(toy), pytest.raises(UnsupportedError, match="ToyMLP is a custom HookedRootModule.*drop executor="):
        geometry.subspace_ablation(toy, pairs, "hook_hidden", {"a": torch.ones(2, 16)}, metric=lambda x: x.sum(),
                                   executor=PlanRecorder(), progress=False)
    model = gpt2_style()
    tokens = torch.randint(1, 61, (2, 5))
    with no_forward(model), pytest.raises(UnsupportedError, match=r"forward_kwargs \['prepend_bos'\]"):
        geometry.subspace_ablation(model, tokens, "blocks.0.hook_resid_post", {"a": torch.ones(2, model.cfg.d_model)},
                                   metric=lambda x: x.sum(), forward_kwargs={"prepend_bos": False}, progress=False)
    with no_forward(model), pytest.raises(OptionError, match="memory_mb must be positive"):
        geometry.subspace_ablation(model, tokens, "blocks.0.hook_resid_post", {"a": torch.ones(2, model.cfg.d_model)},
                                   metric=lambda x: x.sum(), memory_mb=-1, progress=False)


# -- issue 10's reliability probes (formerly tests/test_reliability_statistics.py), beside the module they test --
X, Y = gaussian(12, 4, seed=1), gaussian(12, 3, seed=2)


def test_a_constant_input_has_no_variance_at_any_scale() -> None:
    # the mean of a constant column is off by rounding; rescaled, that rounding must not pose as variance
    constant = torch.full((7, 3), 0.1, dtype=torch.float64)
    with pytest.raises(InputError, match="variance_explained: X has no variance around its mean"):
        geometry.variance_explained(constant, torch.eye(3)[:1])
    with pytest.raises(InputError, match="spectrum: X is all zeros"):
        geometry.spectrum(constant, center=True)


def test_spectrum_keeps_the_singular_values_at_their_scale() -> None:
    expected = np.linalg.svd(X.numpy(), compute_uv=False) * 1e200
    assert_close(geometry.spectrum(X * 1e200).singular_values, torch.as_tensor(expected), rtol=1e-12, atol=0)


def test_spectrum_rank_takes_a_share_in_0_1_and_never_exceeds_the_directions_with_variance() -> None:
    s = geometry.spectrum(torch.diag(torch.tensor([3.0, 1.0, 0.0], dtype=torch.float64)))
    for share in (0.0, 1.5, -0.1):
        with pytest.raises(OptionError, match=f"share={share} is not a fraction of the variance in \\(0, 1\\]"):
            s.rank(share)  # before: rank(1.5) = 3 (more than the 2 directions with variance), rank(0) = 1
    assert [s.rank(x) for x in (0.5, 0.9, 0.95, 1.0)] == [1, 1, 2, 2]  # shares 0.9, 0.1, 0


def test_project_and_orthogonalize_refuse_nan_like_variance_explained() -> None:
    nan_row = torch.tensor([[float("nan"), 1.0]])
    with pytest.raises(InputError, match=r"project: X has 1 NaN/Inf entries \(first at index \(0, 0\)\)"):
        geometry.project(nan_row, torch.tensor([[1.0, 0.0]]))
    with pytest.raises(InputError, match=r"orthogonalize: v has 1 NaN/Inf entries"):
        weights.orthogonalize(nan_row[0], torch.tensor([1.0, 0.0]))
    with pytest.raises(InputError, match=r"variance_explained: X has 1 NaN/Inf entries"):
        geometry.variance_explained(nan_row, torch.tensor([[1.0, 0.0]]))
