"""TransformerLens-style plain metrics (``logits -> scalar``) equal TL's get_act_patch_* results,
and take the read-only head, prefix reuse and the split final block exactly where tracing shows
they read one position (engine.reads)."""

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.testing import assert_close

import tl_interp as ti
from tests.test_patching import TL_SWEEPS, model_for, pair

A, B = 7, 19
SITES = [("resid_pre", None), ("z", ("pos", "head_index"))]


def last(logits: torch.Tensor) -> torch.Tensor:
    return (logits[:, -1, A] - logits[:, -1, B]).mean()


def after_the_edit(logits: torch.Tensor) -> torch.Tensor:  # the runs differ at position 2 of 6
    return logits[:, 3].log_softmax(-1)[:, A].mean()


def before_the_edit(logits: torch.Tensor) -> torch.Tensor:  # the same in every cell but layer 0's own
    return logits[:, 1, A].mean()


def mean_over_positions(logits: torch.Tensor) -> torch.Tensor:
    return (logits[:, :, A] - logits[:, :, B]).mean()


def argmax_position(logits: torch.Tensor) -> torch.Tensor:
    position = logits[0, :, A].argmax()
    return logits[:, position, A].mean()


def data_dependent(threshold: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """Reads the last position, or position 1 in cells whose logit difference falls below ``threshold``."""
    def data_dependent(logits: torch.Tensor) -> torch.Tensor:
        value = last(logits)
        return value if float(value.detach()) >= threshold else logits[:, 1, A].mean()
    return data_dependent


# kind -> (read_only, prefix_kv, split_final) expected "on"
PATHS = {
    "last": (True, True, True),
    "after_the_edit": (True, True, False),
    "before_the_edit": (True, True, False),
    "mean_over_positions": (False, True, False),  # positions before a pass's window: the base run's logits
    "argmax_position": (False, True, False),
    "data_dependent": (True, True, True),
}


def metric_for(kind: str, model: Any, clean: torch.Tensor, corrupted: torch.Tensor) -> Callable[..., Any]:
    if kind != "data_dependent":
        return globals()[kind]
    # a threshold below the base run's value and above some cells': those cells read elsewhere
    with torch.no_grad():
        base = float(last(model(corrupted)))
    _, clean_cache = model.run_with_cache(clean)
    from transformer_lens import patching as tlp
    cells = tlp.get_act_patch_resid_pre(model, corrupted, clean_cache, last).flatten()
    below = cells[cells < base - 1e-3]
    assert below.numel() > 0, "the case needs cells below the base value"
    return data_dependent((base + float(below.max())) / 2)


@pytest.mark.parametrize("arch", ["gpt2", "llama_gqa"])
@pytest.mark.parametrize("kind", list(PATHS))
def test_plain_metrics_equal_transformer_lens_and_take_the_fast_paths_only_where_exact(arch: str, kind: str) -> None:
    model = model_for(arch)
    clean, corrupted, _ = pair()
    metric = metric_for(kind, model, clean, corrupted)
    _, clean_cache = model.run_with_cache(clean)
    for site, over in SITES:
        expected = TL_SWEEPS[(site, over)](model, corrupted, clean_cache, metric)
        ours = ti.patching.sweep(model, clean, corrupted, metric, site=site, over=over, progress=False)
        assert_close(ours.values, expected.float(), rtol=0, atol=1e-4)
        settings = ours.provenance.settings
        engine = settings["engine"]
        read_only, prefix, split = PATHS[kind]
        assert (engine["read_only"] == "on", engine["prefix_kv"] == "on", engine["split_final"] == "on") == \
            (read_only, prefix, split), engine
        assert (settings["prefix_passes"] > 0) is prefix
        if read_only:
            assert engine["plain_metric"].startswith("plain metric traced: it reads position"), engine
        else:
            assert engine["plain_metric"].startswith("plain metric reads the full logits: it reads every position")
        if kind == "data_dependent" and site == "resid_pre":  # the cells below the threshold ran again in full
            assert settings["plain_recomputed"] > 0
        elif kind != "data_dependent":
            assert settings["plain_recomputed"] == 0


@pytest.mark.parametrize("arch", ["gpt2", "llama_gqa"])
def test_a_metric_object_reading_before_the_edited_position_equals_transformer_lens(arch: str) -> None:
    # cells whose edits start after the read position must still compute it (they change nothing there)
    model = model_for(arch)
    clean, corrupted, _ = pair()
    metric = ti.metrics.logit_diff(A, B, positions=1)
    _, clean_cache = model.run_with_cache(clean)
    for skip in (True, False):
        ours = ti.patching.sweep(model, clean, corrupted, metric, skip_unchanged=skip, progress=False)
        expected = TL_SWEEPS[("resid_pre", None)](model, corrupted, clean_cache, metric)
        assert ours.provenance.settings["engine"]["prefix_kv"] == "on"
        assert_close(ours.values, expected.float(), rtol=0, atol=1e-4)


def test_a_metric_drawing_random_numbers_reads_the_full_logits_and_equals_transformer_lens() -> None:
    model = model_for("llama_gqa")
    clean, corrupted, _ = pair()

    def drawing(logits: torch.Tensor) -> torch.Tensor:  # draws, but its value does not depend on the draw
        return last(logits) + 0.0 * torch.rand(())

    _, clean_cache = model.run_with_cache(clean)
    expected = TL_SWEEPS[("resid_pre", None)](model, corrupted, clean_cache, drawing)
    ours = ti.patching.sweep(model, clean, corrupted, drawing, progress=False)
    engine = ours.provenance.settings["engine"]
    assert engine["read_only"] == "off: plain metric reads the full logits: it draws random numbers"
    assert_close(ours.values, expected.float(), rtol=0, atol=1e-4)


def test_fast_paths_off_keeps_a_plain_metric_on_the_full_logits() -> None:
    model = model_for("gpt2")
    clean, corrupted, _ = pair()
    ours = ti.patching.sweep(model, clean, corrupted, last, fast_paths=False, progress=False)
    engine = ours.provenance.settings["engine"]
    assert engine["read_only"].startswith("off: fast paths disabled")
    assert engine["plain_metric"] == "reads the full logits: fast paths disabled (fast_paths=False)"


def test_a_metric_writing_into_its_logits_where_no_counter_sees_still_equals_transformer_lens() -> None:
    # the engine reuses one buffer of hidden logits across calls (reads.HiddenLogits); this metric
    # writes 5.0 through .data into a hidden (NaN) entry and adds 1 when it finds 5.0 there: on
    # fresh logits (TransformerLens's, or fresh hidden ones) it never does, on a leaking buffer it would
    model = model_for("gpt2")
    clean, corrupted, _ = pair()

    def leaky(logits: torch.Tensor) -> torch.Tensor:
        corner = logits[:, -1, A].data.as_strided((1,), (1,), 0)  # entry (0, 0, 0), read and written unseen
        bump = 1.0 if float(corner[0]) == 5.0 else 0.0
        if corner.isnan().all():
            corner.fill_(5.0)
        return last(logits) + bump

    _, clean_cache = model.run_with_cache(clean)
    expected = TL_SWEEPS[("resid_pre", None)](model, corrupted, clean_cache, leaky)
    ours = ti.patching.sweep(model, clean, corrupted, leaky, progress=False)
    settings = ours.provenance.settings
    assert settings["engine"]["read_only"] == "on" and settings["plain_calls_repeated"] > 0
    assert_close(ours.values, expected.float(), rtol=0, atol=1e-4)


def test_a_value_that_is_a_view_of_the_logits_equals_transformer_lens() -> None:
    # logits[0, -1, A] is a view: the engine's buffer is reset after each call, the value must not be
    model = model_for("llama_gqa")
    clean, corrupted, _ = pair()

    def first_row(logits: torch.Tensor) -> torch.Tensor:
        return logits[0, -1, A]

    _, clean_cache = model.run_with_cache(clean)
    expected = TL_SWEEPS[("resid_pre", None)](model, corrupted, clean_cache, first_row)
    ours = ti.patching.sweep(model, clean, corrupted, first_row, progress=False)
    assert ours.provenance.settings["engine"]["read_only"] == "on"
    assert_close(ours.values, expected.float(), rtol=0, atol=1e-4)
