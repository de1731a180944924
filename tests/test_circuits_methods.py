"""Each scoring method against its definition, written by hand with TransformerLens hooks: EAP,
EAP-IG over inputs and over activations (the reference's integration points), with corrupted, mean
and zero ablation; exact scores under mean and zero ablation; padded batches for EAP-IG; the
executor a gradient method can't use; the survival a faithfulness curve reports by default."""

from typing import Any

import pytest
import torch

import tl_interp as ti
from tests import _circuits_reference as ref
from tests.conftest import _cfg, gpt2_style, hooked_model, llama_style
from tests.test_circuits import METRIC, _pair, _per_prompt
from tl_interp.errors import InputError, ShapeError, UnsupportedError

MODELS = {"gpt2": gpt2_style, "llama_gqa_rotary_rms": llama_style}


def _ablated(model: Any, corrupted_cache: Any, shape: tuple[int, int], ablation: str):
    """sender -> the value an ablated edge carries: the corrupted run's, its mean over prompts and
    positions, or zero."""
    def value(sender: str) -> torch.Tensor:
        out = ref.sender_out(model, corrupted_cache, sender)
        if ablation == "mean":
            return out.mean((0, 1)).expand(*shape, -1)
        return torch.zeros_like(out) if ablation == "zero" else out
    return value


def _sender_hooks(model: Any) -> list[tuple[str, list[str]]]:
    """(hook, senders) in forward order: the embeddings, each layer's heads together, each MLP."""
    out = [("hook_embed", ["input"])]
    for layer in range(model.cfg.n_layers):
        out.append((f"blocks.{layer}.attn.hook_result", [f"a{layer}.h{h}" for h in range(model.cfg.n_heads)]))
        if not model.cfg.attn_only:
            out.append((f"blocks.{layer}.hook_mlp_out", [f"m{layer}"]))
    return out


def _patch(value: torch.Tensor):
    def patch(act, hook):
        return value
    return patch


def by_hand(model: Any, clean: torch.Tensor, corrupted: torch.Tensor, method: str, *, ablation: str = "corrupted",
            steps: int = 5, mask: torch.Tensor | None = None) -> tuple[tuple[str, ...], torch.Tensor]:
    """(edge names, (n_prompts, n_edges) scores) of ``method`` from its definition: the sender's
    ablated minus clean output, dotted with the metric's gradient at the receiver's input, summed
    over positions and d_model, the gradient averaged over the method's runs."""
    kw = {} if mask is None else {"attention_mask": mask}
    with ref.flags(model), torch.no_grad():
        _, cc = model.run_with_cache(clean, **kw)
        _, kc = model.run_with_cache(corrupted, **kw)
    other = _ablated(model, kc, tuple(clean.shape), ablation)
    runs: list[list[tuple[str, Any]]] = [[]]  # EAP: the clean run
    if method == "eap-ig-inputs":  # embeddings at corrupted + k/steps (clean - corrupted), k = 0 .. steps-1
        runs = [[("hook_embed", _patch(kc["hook_embed"] + k / steps * (cc["hook_embed"] - kc["hook_embed"])))]
                for k in range(steps)]
    elif method == "eap-ig-activations":  # each node output in turn at alpha clean + (1 - alpha) ablated
        runs = []
        for hook, senders in _sender_hooks(model):
            clean_out = torch.stack([ref.sender_out(model, cc, s) for s in senders], 2)
            ablated_out = torch.stack([other(s) for s in senders], 2)
            if not hook.endswith("hook_result"):  # one node: (batch, pos, d_model)
                clean_out, ablated_out = clean_out[:, :, 0], ablated_out[:, :, 0]
            runs += [[(hook, _patch(k / steps * clean_out + (1 - k / steps) * ablated_out))] for k in range(1, steps + 1)]
    g = ti.circuits.graph(model)
    receivers = sorted({ref.receiver_at(model, e.split("->")[1])[0] for e in g.edges})
    grad = {h: 0.0 for h in receivers}
    for patches in runs:
        leaves: dict[str, torch.Tensor] = {}

        def read(act, hook):  # a zero added at the input: its gradient is the metric's gradient there
            leaves[hook.name] = torch.zeros_like(act, requires_grad=True)
            return act + leaves[hook.name]

        with ref.flags(model), torch.enable_grad():
            logits = model.run_with_hooks(clean, fwd_hooks=patches + [(h, read) for h in receivers], **kw)
            # a patched node output cuts the gradient into its own inputs in that run: zero there
            grads = torch.autograd.grad(_per_prompt(logits).sum(), [leaves[h] for h in receivers], allow_unused=True)
        for h, g_ in zip(receivers, grads):
            grad[h] = grad[h] + (torch.zeros_like(leaves[h]) if g_ is None else g_) / len(runs)
    scores = []
    for edge in g.edges:
        sender, receiver = edge.split("->")
        hook, head = ref.receiver_at(model, receiver)
        delta = other(sender) - ref.sender_out(model, cc, sender)
        at = grad[hook] if head is None else grad[hook][:, :, head]
        scores.append((delta * at).sum((1, 2)))
    return g.edges, torch.stack(scores, 1)


@pytest.mark.parametrize("family", list(MODELS))
@pytest.mark.parametrize("method, ablation", [("eap", "corrupted"), ("eap", "mean"), ("eap", "zero"),
                                              ("eap-ig-inputs", "corrupted"), ("eap-ig-activations", "corrupted"),
                                              ("eap-ig-activations", "mean"), ("eap-ig-activations", "zero")])
def test_gradient_scores_equal_their_definition_written_with_hooks(family, method, ablation):
    model = MODELS[family]()
    clean, corrupted = _pair()
    got = ti.circuits.attribute(model, clean, corrupted, METRIC, method=method, steps=3, ablation=ablation,
                                progress=False)
    names, expected = by_hand(model, clean, corrupted, method, ablation=ablation, steps=3)
    assert got.names == names
    torch.testing.assert_close(got.per_prompt, expected, atol=1e-5, rtol=1e-4)
    assert float(expected.abs().max()) > 1e-2


def test_the_three_gradient_methods_differ_where_the_model_is_not_linear():
    # the hand definitions above are not one function under three names
    model = gpt2_style()
    clean, corrupted = _pair()
    values = [by_hand(model, clean, corrupted, m, steps=3)[1] for m in ("eap", "eap-ig-inputs", "eap-ig-activations")]
    for a in range(3):
        for b in range(a + 1, 3):
            assert float((values[a] - values[b]).abs().max()) > 1e-3


@pytest.mark.parametrize("ablation", ["mean", "zero"])
def test_exact_scores_with_mean_and_zero_ablation_equal_patching_each_edge_by_hand(ablation):
    model = llama_style()
    clean, corrupted = _pair()
    scores = ti.circuits.attribute(model, clean, corrupted, METRIC, method="exact", ablation=ablation, progress=False)
    with ref.flags(model), torch.no_grad():
        _, cc = model.run_with_cache(clean)
        _, kc = model.run_with_cache(corrupted)
        other = _ablated(model, kc, tuple(clean.shape), ablation)
        base = _per_prompt(model(clean))
        some = torch.randperm(len(scores.names), generator=torch.Generator().manual_seed(0))[:30].tolist()
        some += [i for i, e in enumerate(scores.names) if e.startswith("input->") and e.endswith(("<q>", "m0", "logits"))]
        expected = []
        for i in some:
            sender, receiver = scores.names[i].split("->")
            hook, head = ref.receiver_at(model, receiver)
            delta = other(sender) - ref.sender_out(model, cc, sender)
            expected.append(_per_prompt(model.run_with_hooks(clean, fwd_hooks=[(hook, ref.adder(delta, head))])) - base)
    torch.testing.assert_close(scores.per_prompt[:, some], torch.stack(expected, 1), atol=1e-5, rtol=0)


def test_eap_ig_on_a_padded_batch_of_unequal_lengths_equals_each_prompt_alone():
    model = llama_style()
    clean, corrupted = _pair(rows=2, seq=7)
    mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2])
    tok = lambda t: ti.models.Tokenized(t, mask, torch.tensor([6, 4]), [["x"] * 7] * 2)  # noqa: E731
    for method in ("eap-ig-inputs", "eap-ig-activations"):
        padded = ti.circuits.attribute(model, tok(clean), tok(corrupted), METRIC, method=method, steps=3,
                                       progress=False)
        for row, length in ((0, 7), (1, 5)):
            alone = ti.circuits.attribute(model, clean[row:row + 1, :length], corrupted[row:row + 1, :length], METRIC,
                                          method=method, steps=3, progress=False)
            torch.testing.assert_close(padded.per_prompt[row], alone.per_prompt[0], atol=1e-5, rtol=1e-4,
                                       msg=f"{method}, prompt {row}")


class _Elsewhere:
    """An executor that runs cells in another process (as Ray's does); never called here."""

    def run(self, plan, *, progress=True, cells=None):  # pragma: no cover - refused before any run
        raise AssertionError("a gradient method ran its cells on another executor")


@pytest.mark.parametrize("method", ["eap", "eap-ig-inputs", "eap-ig-activations"])
def test_gradient_methods_refuse_an_executor_that_cannot_keep_their_autograd_graph(method):
    model = gpt2_style()
    clean, corrupted = _pair()

    def refuse(*args, **kwargs):
        raise AssertionError("a forward pass ran before the error")

    handle = model.register_forward_pre_hook(refuse)
    try:
        with pytest.raises(UnsupportedError, match=f"method='{method}'.*_Elsewhere can't run gradient methods.*"
                                                    "executor=None"):
            ti.circuits.attribute(model, clean, corrupted, METRIC, method=method, executor=_Elsewhere(), progress=False)
    finally:
        handle.remove()
    local = ti.circuits.attribute(model, clean, corrupted, METRIC, method=method, progress=False,
                                  executor=ti.engine.executors.LocalExecutor())
    torch.testing.assert_close(local.per_prompt, ti.circuits.attribute(model, clean, corrupted, METRIC, method=method,
                                                                       progress=False).per_prompt)


def test_a_faithfulness_curve_reports_top_edge_survival_by_default_computed_as_by_hand():
    model = gpt2_style()
    clean, corrupted = _pair(rows=6)
    scores = ti.circuits.attribute(model, clean, corrupted, METRIC, method="eap", progress=False)
    budgets = (0.01, 0.05, 0.2, 1.0)
    curve = ti.circuits.faithfulness_curve(model, clean, corrupted, scores, METRIC, budgets=budgets, n_boot=60,
                                           progress=False)
    survival = curve.extras["survival"]
    assert survival.shape == (1, len(budgets))
    assert "top-edge survival" in curve.summary() and "top-edge survival" in curve._repr_html_()
    per_prompt, n = scores.per_prompt.double(), len(scores.names)
    index = ti.stats.bootstrap_indices(per_prompt.shape[0], 60, seed=0)
    for j, b in enumerate(budgets):
        k = int(b * n)
        top = set(per_prompt.mean(0).abs().argsort(descending=True)[:k].tolist())
        kept = [len(top & set(per_prompt[rows].mean(0).abs().argsort(descending=True)[:k].tolist())) / k if k else 1.0
                for rows in index]
        assert float(survival[0, j]) == pytest.approx(sum(kept) / len(kept), abs=1e-9), b
    assert float(survival[0, -1]) == 1.0 and float(survival[0, 0]) < 1.0  # all edges always survive; a few don't


def test_circuit_intervals_are_the_ratio_of_means_with_a_paired_bootstrap_over_prompts():
    model = gpt2_style()
    clean, corrupted = _pair(rows=8)
    g = ti.circuits.graph(model)
    chosen = [g.edges, [], g.edges[::2], [e for e in g.edges if e.endswith("logits")]]
    result = ti.circuits.faithfulness(model, clean, corrupted, chosen, METRIC, progress=False)
    got = ti.circuits.circuit_intervals(result, n_boot=300, seed=1)
    values, c, k = result.values.double(), result.clean.double(), result.corrupted.double()
    for i in range(len(chosen)):  # one circuit at a time, the statistic unvectorised
        f = (values[i].mean() - k.mean()) / (c.mean() - k.mean())
        low, high = ti.stats.bootstrap_ci(lambda v, cl, co: (v.mean() - co.mean()) / (cl.mean() - co.mean()),
                                          values[i], c, k, n_boot=300, seed=1)
        assert float(got["f"][i]) == pytest.approx(float(f), abs=1e-12)
        assert (float(got["f_low"][i]), float(got["f_high"][i])) == pytest.approx((float(low), float(high)), abs=1e-12)
    assert float(got["f"][0]) == pytest.approx(1.0, abs=1e-5) and float(got["f"][1]) == pytest.approx(0.0, abs=1e-5)
    assert float(got["f_high"][2] - got["f_low"][2]) > 0  # a partial circuit's f varies over prompts
    same = type("R", (), {"values": values, "extras": {"clean": c, "corrupted": c}})()
    with pytest.raises(UnsupportedError, match="same mean metric"):
        ti.circuits.circuit_intervals(same)
    scores = ti.circuits.attribute(model, clean, corrupted, METRIC, method="eap", progress=False)
    with pytest.raises(ShapeError, match="needs per-prompt values"):
        ti.circuits.circuit_intervals(scores)  # edge scores (values per edge), not a faithfulness result
    with pytest.raises(InputError, match="needs a Faithfulness result"):
        ti.circuits.circuit_intervals([0.5, 0.7])


def test_edge_scores_report_top_k_survival_by_default():
    model = gpt2_style()
    clean, corrupted = _pair(rows=6)
    scores = ti.circuits.attribute(model, clean, corrupted, METRIC, method="eap", progress=False)
    expected = ti.circuits.stability(scores, k=4, n_boot=200)
    assert (f"top-4 survival over 200 resamples of the prompts: {float(expected.survival[0]):.2f} [95% CI "
            f"{float(expected.extras['survival_low'][0]):.2f}, {float(expected.extras['survival_high'][0]):.2f}]"
            in scores.summary(4))
    one = ti.circuits.attribute(model, clean[:1], corrupted[:1], METRIC, method="eap", progress=False)
    assert "survival" not in one.summary()  # one prompt: nothing to resample
