"""Helpers of issue 10's reliability probes (now in the test file of the module each probes).

- ``no_forward(model)``: while active, any forward pass of ``model`` raises ``ForwardRan``
  (its ``forward`` is swapped and its embedding hook point raises), so a test that expects a
  typed error "before any forward pass" fails loudly if a forward pass ran first.
  ``ForwardRan`` is a ``BaseException``: no ``except Exception`` on the way can turn it into
  the error the test expects.
- small random models (cached; tests never leave hooks on them) and the zoo's ``ordinal-4l``
  (a word-level tokenizer, right padding), for probes that need prompts.
- ``tl_run``: a plain TransformerLens run with hand-written hooks, the independent reference.
"""

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import torch

from tests.conftest import _cfg, _hooked

__all__ = ["ForwardRan", "no_forward", "tiny", "ordinal", "tl_run", "at_positions"]


class ForwardRan(BaseException):
    """A forward pass ran where the test expects an error before any."""


@contextlib.contextmanager
def no_forward(model: Any) -> Iterator[None]:
    """Make every forward pass of ``model`` raise ``ForwardRan`` for the duration."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ForwardRan(f"a forward pass of {type(model).__name__} ran before the expected error")

    previous = model.__dict__.get("forward")
    model.forward = refuse
    point = getattr(model, "hook_dict", {}).get("hook_embed")
    handle = point.register_forward_hook(lambda *a: refuse()) if point is not None else None
    try:
        yield
    finally:
        if handle is not None:
            handle.remove()
        if previous is None:
            del model.forward
        else:
            model.forward = previous


@functools.cache
def _tiny(key: tuple[tuple[str, Any], ...]) -> Any:
    return _hooked()(_cfg(**dict(key))).eval()


def tiny(**overrides: Any) -> Any:
    """A small random HookedTransformer (``tests.conftest._cfg`` with ``overrides``), cached."""
    return _tiny(tuple(sorted(overrides.items(), key=lambda kv: kv[0])))


@functools.cache
def ordinal() -> Any:
    """The zoo's ordinal-4l: word-level tokenizer, right padding, BOS prepended, n_ctx=32."""
    import tl_interp as ti

    return ti.models.load("ordinal-4l")


def tl_run(model: Any, tokens: torch.Tensor, hooks: list[tuple[str, Callable[..., Any]]], **kw: Any) -> torch.Tensor:
    """Logits of a plain TransformerLens run with hand-written hooks (no tl_interp involved)."""
    with torch.no_grad():
        return model.run_with_hooks(tokens, fwd_hooks=hooks, **kw)


def at_positions(positions: list[int], fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[..., torch.Tensor]:
    """A TL hook applying ``fn`` to the activation at absolute ``positions`` (axis 1)."""

    def hook(act: torch.Tensor, hook: Any) -> torch.Tensor:
        out = act.clone()
        out[:, positions] = fn(act[:, positions])
        return out

    return hook
