"""What the suite skips on TransformerLens 4, and why (the second CI leg; see README).

TransformerLens 4 removed ``HookedTransformer`` and sae-lens requires TransformerLens < 4, so on
4.x a test (or a docstring example: this file sits at the root so that doctests under
``tl_interp/`` are covered too) that needs either is skipped with the reason, never failed and
never run half-way:

- marked ``@pytest.mark.hooked`` / ``@pytest.mark.sae`` (or a module's ``pytestmark``);
- a test module whose import needs them (the whole module is reported as one skip);
- a test or example that reaches them (the removed name's ``ImportError``, sae-lens missing, or
  ``compat.require_hooked`` / ``compat.require_sae``'s ``UnsupportedError``): skipped, grouped
  by reason.

The end of the run prints the skips by reason, so the 4.x leg's count is in its output. On
TransformerLens 3.9 (the default environment) nothing here changes a single outcome.
"""

import collections
import doctest
from typing import Any

import pytest

NEEDS_HOOKED = "needs HookedTransformer (removed in TransformerLens 4)"
NEEDS_SAE = "needs sae-lens (it requires TransformerLens < 4)"
_TL4_SKIPS: collections.Counter[str] = collections.Counter()
_SKIPPED_MODULES: set[str] = set()  # a test file is collected twice (as tests and as doctests): count it once


def _tl4() -> bool:
    from tl_interp.compat.tl import has_hooked_transformer

    return not has_hooked_transformer()


def _needs(err: BaseException | None) -> str | None:
    """Which removed dependency ``err`` (or what it wraps) is about, or None."""
    seen = 0
    while err is not None and seen < 8:
        if isinstance(err, doctest.UnexpectedException):
            err = err.exc_info[1]
            continue
        text = str(err)
        if isinstance(err, ImportError):
            if "removed in TransformerLens 4.0" in text:
                return NEEDS_HOOKED
            if (getattr(err, "name", None) or "").split(".")[0] == "sae_lens":
                return NEEDS_SAE
        from tl_interp.errors import UnsupportedError

        if isinstance(err, UnsupportedError):
            if "needs sae-lens" in text:
                return NEEDS_SAE
            if "needs TransformerLens's HookedTransformer" in text:
                return NEEDS_HOOKED
        if type(err).__name__ == "CellExecutionError":  # a demo run as a notebook: its cell's error, as text
            return _needs_text(text)
        err = err.__cause__ or err.__context__
        seen += 1
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _tl4():
        return
    for item in items:
        for marker, reason in (("hooked", NEEDS_HOOKED), ("sae", NEEDS_SAE)):
            if item.get_closest_marker(marker) is not None:
                item.add_marker(pytest.mark.skip(reason=f"TL4: {reason}"))


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Any:
    report = yield
    if isinstance(collector, pytest.Module) and (report.failed or report.skipped) and _tl4():
        why = _needs_text(str(report.longrepr))
        if why is not None:
            report.outcome = "skipped"
            report.longrepr = (str(collector.path), 0, f"Skipped: TL4: {why} (the whole module)")
            if str(collector.path) not in _SKIPPED_MODULES:
                _SKIPPED_MODULES.add(str(collector.path))
                _TL4_SKIPS[f"{why} (whole modules)"] += 1
    return report


def _needs_text(text: str) -> str | None:
    if any(s in text for s in ("removed in TransformerLens 4.0", NEEDS_HOOKED, "needs TransformerLens's HookedTransformer")):
        return NEEDS_HOOKED
    if any(s in text for s in ("No module named 'sae_lens'", NEEDS_SAE, "needs sae-lens:")):
        return NEEDS_SAE
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed and call.excinfo is not None and _tl4():
        why = _needs(call.excinfo.value)
        if why is not None:
            report.outcome = "skipped"
            report.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: TL4: {why}")
    if report.skipped and report.when in ("setup", "call") and _tl4():
        text = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        for reason in (NEEDS_HOOKED, NEEDS_SAE):
            if reason in text:
                _TL4_SKIPS[reason] += 1
    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _tl4():
        return
    total = sum(_TL4_SKIPS.values())
    terminalreporter.write_sep("=", f"TransformerLens 4 leg: {total} skipped for removed dependencies")
    for reason, count in sorted(_TL4_SKIPS.items()):
        terminalreporter.write_line(f"{count:5d}  {reason}")
