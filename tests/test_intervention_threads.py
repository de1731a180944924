"""Interventions applied in one thread are invisible to another."""

import threading
from typing import Any

import pytest
import torch
from torch.testing import assert_close

from tests.conftest import no_hooks_attached
from tests.reliability import at_positions, ordinal, tiny, tl_run
from tl_interp import hooks, site


# -- issue 10's reliability probes (formerly tests/test_reliability_threads.py) --
TOKENS = torch.randint(1, 61, (2, 5), generator=torch.Generator().manual_seed(0))


def in_threads(*targets: Any) -> None:
    threads = [threading.Thread(target=t) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)


def test_hooks_applied_in_one_thread_are_not_seen_by_another() -> None:
    # probe 11: "hooks registered by .applied() are seen by other threads using the same model"
    model = tiny()
    plain = model(TOKENS)
    inside, other_ran = threading.Event(), threading.Event()
    out: dict[str, torch.Tensor] = {}

    def applier() -> None:
        with hooks.zero_ablate(site("resid_pre", 0)).applied(model):
            inside.set()
            other_ran.wait(30)
            out["mine"] = model(TOKENS)

    def other() -> None:
        inside.wait(30)
        out["other"] = model(TOKENS)
        other_ran.set()

    in_threads(applier, other)
    assert torch.equal(out["other"], plain)
    assert_close(out["mine"], tl_run(model, TOKENS, [(site("resid_pre", 0), lambda a, hook: a * 0)]), rtol=0, atol=0)
    assert no_hooks_attached(model) and "forward" not in model.__dict__


@pytest.mark.hooked  # HookedTransformer's key-value-cached generate (TL 4's native Bridge has no cache)
def test_one_thread_leaving_its_block_keeps_positions_right_for_another() -> None:
    # own probe: A enters, B enters, A leaves, then B generates with positions=0 (needs the offset of each step)
    model = ordinal()
    tokens = model.to_tokens("one , two ,")
    v = torch.randn(128, generator=torch.Generator().manual_seed(5)) * 4
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    out: dict[str, Any] = {}

    def a() -> None:
        with hooks.scale(site("resid_pre", 1), 1.0).applied(model):
            a_in.set()
            b_in.wait(30)
        a_out.set()

    def b() -> None:
        a_in.wait(30)
        with hooks.add(site("resid_pre", 2), v, positions=0).applied(model):
            b_in.set()
            a_out.wait(30)
            out["wrapped"] = "forward" in model.__dict__
            steps: list[torch.Tensor] = []
            point = model.hook_dict["blocks.3.hook_resid_post"]
            handle = point.register_forward_hook(lambda mod, i, o: steps.append(o.detach().clone()))
            try:
                out["tokens"] = model.generate(tokens, max_new_tokens=3, do_sample=False, verbose=False)
            finally:
                handle.remove()
            out["steps"] = torch.cat(steps, 1)

    in_threads(a, b)
    assert out["wrapped"], "A's exit removed the forward wrapper B still relies on"
    got: list[torch.Tensor] = []
    with torch.no_grad():
        model.run_with_hooks(out["tokens"][:, :-1].clone(), fwd_hooks=[
            (site("resid_pre", 2), at_positions([0], lambda x: x + v)),
            ("blocks.3.hook_resid_post", lambda x, hook: got.append(x.clone()))])
    assert_close(out["steps"], got[0], rtol=1e-4, atol=1e-4)
    assert no_hooks_attached(model) and "forward" not in model.__dict__ and "generate" not in model.__dict__


def test_concurrent_runs_of_different_interventions_each_get_their_own() -> None:
    # own probe: four threads, four interventions, one model
    model = tiny()
    ivs = [hooks.zero_ablate(site("z", 0), heads=h) for h in range(4)]
    expected = [iv.run(model, TOKENS) for iv in ivs]
    got: dict[int, list[torch.Tensor]] = {h: [] for h in range(4)}
    start = threading.Barrier(4)

    def worker(h: int) -> Any:
        def run() -> None:
            start.wait(30)
            for _ in range(5):
                got[h].append(ivs[h].run(model, TOKENS))
        return run

    in_threads(*(worker(h) for h in range(4)))
    for h in range(4):
        assert len(got[h]) == 5 and all(torch.equal(g, expected[h]) for g in got[h])
    assert no_hooks_attached(model) and "forward" not in model.__dict__
