"""Tracing a plain metric's reads (engine.reads): the positions it names are exactly those whose
values the call can see, and anything it cannot name is refused, never guessed."""

import random
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch

import tl_interp as ti
from tl_interp.engine import reads

LOGITS = torch.randn(3, 6, 9, generator=torch.Generator().manual_seed(0))
A, B = 2, 7
LAST = 5

# metrics of logits (batch=3, pos=6, d_vocab=9) and the one position each reads
ONE_POSITION: dict[str, tuple[Callable[[torch.Tensor], Any], int]] = {
    "TL's convention": (lambda x: (x[:, -1, A] - x[:, -1, B]).mean(), LAST),
    "log-softmax first": (lambda x: x.log_softmax(-1)[:, -1, A].mean(), LAST),
    "functional softmax": (lambda x: torch.nn.functional.softmax(x.float(), dim=2)[:, -1, A].mean(), LAST),
    "a fixed earlier position": (lambda x: x[:, 2, A].mean(), 2),
    "a slice of one position": (lambda x: x[:, -1:, A].mean(), LAST),
    "an ellipsis": (lambda x: x[..., -1, :][:, A].mean(), LAST),
    "rows and answers as tensors": (lambda x: x[torch.arange(3), -1, torch.tensor([1, 2, 3])].mean(), LAST),
    "a boolean position mask": (lambda x: x[:, torch.arange(6) == 3, A].mean(), 3),
    "a position from the shape": (lambda x: x[:, x.shape[1] - 2, A].mean() + len(x) + x.ndim, 4),
    "a tl_interp metric called inside": (lambda x: ti.metrics.logit_diff(A, B, positions=-1)(x), LAST),
}
# metrics whose reads cannot be confined to one position, and why
REFUSED: dict[str, tuple[Callable[[torch.Tensor], Any], str]] = {
    "a mean over positions": (lambda x: x[:, :, A].mean(), "every position"),
    "two positions": (lambda x: (x[:, 1, A] - x[:, -1, A]).mean(), r"positions \[1, 5\]"),
    "a reduction of the whole logits": (lambda x: x.sum(), "sum on the whole logits"),
    "an argmax-chosen position": (lambda x: x[:, x[0, :, A].argmax(), A].mean(), "every position"),
    "NaNs masked away": (lambda x: torch.nan_to_num(x)[:, -1, A].mean(), "nan_to_num"),
    "a where": (lambda x: torch.where(x > 0, x, 0.0)[:, -1, A].mean(), "on the whole logits"),
    "the raw data": (lambda x: x.data[:, -1, A].mean(), "on the whole logits"),
    "a list of them": (lambda x: torch.stack([x])[0, :, -1, A].mean(), "inside a container"),
    "torch's generator": (lambda x: x[:, -1, A].mean() + torch.rand(()), "draws random numbers"),
    "Python's generator": (lambda x: x[:, -1, A].mean() + random.random(), "draws random numbers"),
    "an in-place write": (lambda x: x.mul_(2)[:, -1, A].mean(), "mul_"),
}


@pytest.mark.parametrize("name", list(ONE_POSITION))
def test_a_metric_reading_one_position_is_traced_to_it(name: str) -> None:
    metric, position = ONE_POSITION[name]
    found = reads.probe(metric, LOGITS, metric(LOGITS))
    assert (found.read_position, found.why) == (position, None)


@pytest.mark.parametrize("name", list(REFUSED))
def test_a_metric_reading_more_or_unknowably_is_refused_with_the_reason(name: str) -> None:
    metric, why = REFUSED[name]
    before = LOGITS.clone()
    found = reads.probe(metric, LOGITS, metric(LOGITS.clone()))
    assert found.read_position is None
    assert re.search(why, found.why), found.why
    assert torch.equal(LOGITS, before)  # the probe never writes into the logits it was given


def test_a_call_reading_a_position_that_was_not_computed_is_caught() -> None:
    # the branch depends on the values: on these logits it reads position 0, which is hidden
    def branching(x: torch.Tensor) -> torch.Tensor:
        return x[:, -1, A].mean() if float(x[0, -1, A]) > 100 else x[:, 0, A].mean()

    hidden = reads.hidden(LOGITS[:, LAST], torch.full((3,), LAST), tuple(LOGITS.shape), float("nan"))
    value, trace = reads.traced(branching, hidden, frozenset({LAST}))
    assert value is None and "positions [0], which were not computed" in trace.refused
    value, trace = reads.traced(lambda x: x[:, -1, A].mean(), hidden, frozenset({LAST}))
    assert torch.equal(value, LOGITS[:, LAST, A].mean()) and trace.refused is None


def test_a_metric_swallowing_the_refusal_is_still_refused() -> None:
    def swallowing(x: torch.Tensor) -> torch.Tensor:
        try:
            return x.sum()
        except Exception:  # the refusal is not an Exception, and the trace remembers it anyway
            return torch.tensor(0.0)

    value, trace = reads.traced(swallowing, LOGITS)
    assert value is None and trace.refused == "sum on the whole logits"


def test_a_metric_whose_value_changes_when_unread_positions_are_hidden_is_refused() -> None:
    calls = []

    def counting(x: torch.Tensor) -> torch.Tensor:  # a different value on every call
        calls.append(1)
        return x[:, -1, A].mean() + len(calls)

    found = reads.probe(counting, LOGITS, counting(LOGITS))
    assert found.read_position is None and "its value changed" in found.why


def test_a_metric_failing_on_watched_logits_is_refused_not_raised() -> None:
    def strict(x: torch.Tensor) -> torch.Tensor:
        if type(x) is not torch.Tensor:
            raise TypeError("wants a plain tensor")
        return x[:, -1, A].mean()

    found = reads.probe(strict, LOGITS, strict(LOGITS))
    assert found.read_position is None and found.why == "it raised TypeError on watched logits: wants a plain tensor"


# -- one buffer of hidden logits reused across calls (reads.HiddenLogits) ---------------------------
CELLS = torch.randn(4, 3, 9, generator=torch.Generator().manual_seed(1))  # four calls' rows at the read position
AT = torch.full((3,), LAST)


def _calls(metric: Callable[[torch.Tensor], Any], columns: torch.Tensor | None = None
           ) -> tuple[list[Any], list[Any], reads.HiddenLogits]:
    """The metric's value on each of CELLS through one reused buffer, and through fresh hidden logits."""
    shape = tuple(LOGITS.shape)
    rows = CELLS if columns is None else CELLS[..., columns]
    allowed_columns = None if columns is None else frozenset(columns.tolist())
    buffer = reads.HiddenLogits(shape, AT, columns, LOGITS)
    reused = [buffer.traced(metric, r, frozenset({LAST}), allowed_columns)[0] for r in rows]
    fresh = [reads.traced(metric, reads.hidden(r, AT, shape, float("nan"), columns), frozenset({LAST}),
                          allowed_columns)[0] for r in rows]
    return reused, fresh, buffer


@pytest.mark.parametrize("name", ["TL's convention", "log-softmax first", "rows and answers as tensors"])
def test_a_reused_buffer_gives_every_call_what_fresh_hidden_logits_give(name: str) -> None:
    metric, _ = ONE_POSITION[name]
    for columns in (None, torch.tensor([1, 2, 3, A, B])):
        if name == "log-softmax first" and columns is not None:
            continue  # a softmax reads every entry
        reused, fresh, buffer = _calls(metric, columns)
        assert all(torch.equal(a, b) for a, b in zip(reused, fresh)), (reused, fresh)
        assert buffer.given_up == 0 and buffer.clean()  # the one buffer served every call
    assert len({float(v) for v in reused}) == len(CELLS)  # the calls saw different rows


def test_a_value_that_is_a_view_of_the_logits_keeps_its_numbers() -> None:
    # logits[0, -1, A] is a view of the buffer: without a copy it would turn NaN when the buffer is reset
    reused, fresh, buffer = _calls(lambda x: x[0, -1, A])
    assert [float(v) for v in reused] == [float(v) for v in fresh] == [float(c[0, A]) for c in CELLS]
    assert buffer.given_up == 0  # the value is copied out, so the buffer serves the next call


def test_a_view_kept_across_calls_keeps_the_numbers_of_its_own_call() -> None:
    # a metric returning its first call's value: a view of a reused buffer would show later calls' rows
    def first_call(x: torch.Tensor) -> torch.Tensor:
        kept.append(x[:, -1, A])
        return kept[0].sum()

    kept: list[torch.Tensor] = []
    reused, _, buffer = _calls(first_call)
    assert [float(v) for v in reused] == [float(CELLS[0, :, A].sum())] * len(CELLS)
    assert buffer.given_up >= 1  # the buffer a kept view points into is never written again


def test_a_write_into_the_buffer_outside_the_read_entries_never_reaches_a_later_call() -> None:
    # through a view the version counter sees (as_strided): every call gets a new buffer
    # through one no counter sees (.data): the scan finds it, and the caller makes the calls again
    for writer, counted in ((lambda v: v, True), (lambda v: v.data, False)):
        seen: list[float] = []

        def writing(x: torch.Tensor) -> torch.Tensor:
            corner = writer(x[:, -1, A]).as_strided((1,), (1,), 0)  # entry (0, 0, 0): hidden, never read by name
            seen.append(float(corner[0]))
            corner.fill_(5.0)
            return x[:, -1, A].sum()

        reused, fresh, buffer = _calls(writing)
        assert all(torch.equal(a, b) for a, b in zip(reused, fresh))
        if counted:
            assert buffer.given_up == len(CELLS) and all(v != v for v in seen[:len(CELLS)])  # NaN, as fresh
        else:
            assert seen[1] == 5.0  # the second call saw the first one's write ...
            assert not buffer.clean()  # ... which the scan reports
            buffer.renew()
            assert buffer.clean()
