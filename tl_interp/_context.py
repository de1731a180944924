"""The run context: what a hook needs to know about the forward pass it is running in.

A hook function sees one activation tensor. To honour a selection such as ``positions="last"``
(each row's last real token) or ``positions=3`` during a key-value-cached generation step, it
also needs to know which positions of the sequence the activation covers and which of them
are padding. The code that runs the model -- ``Intervention.run`` / ``applied`` and the
engine's stacked passes -- describes that here, in a context variable that the hooks read:

- ``real``: ``(batch, total)`` boolean, the real (non-pad) tokens of the whole sequence so far;
  ``None`` when the forward pass had no attention mask (every position is real, as the
  model itself treats them);
- ``offset``: the absolute position of the activation's first position (a key-value-cached
  generation step, or a pass the engine runs from a cached prefix);
- ``tokens``: the token ids when known (``(batch, total)``), for positions found by token;
- ``offset_known``: False when a generation cache of unknown length is in use, so absolute
  positions can't be placed (position selections then refuse to run);
- ``padding_known``: False when the model tokenised a list of strings itself, so nothing
  here knows where its rows end (selections that depend on padding then refuse to run);
- ``outside_forward``: True for activations computed outside a forward call while the model
  generates (``HookedTransformer.generate`` adds positional embeddings itself), whose window
  of positions nothing describes (position selections then refuse to run).

Context variables are per thread (and per asyncio task), so a context never leaks between
threads. ``describing_calls(model)`` is how ``Intervention.applied`` keeps the context right
for every forward call made while it is active (``model.generate`` included): it wraps the
model's ``forward`` once, however many interventions (and threads) are applied, and refuses a
call that would run past the model's context length before TransformerLens fails inside it.
"""

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tl_interp.compat import call_offset, is_hooked_transformer, kv_previous_mask, tl_default_mask
from tl_interp.compat.forward import install, installed_forward, uninstall
from tl_interp.errors import InputError, UnsupportedError

__all__ = ["RunContext", "current", "running", "describing_calls", "call_context", "check_call_tokens",
           "check_context_length"]


@dataclass(frozen=True)
class RunContext:
    """The batch layout of the forward pass in progress (see the module docstring)."""

    real: Tensor | None = None
    offset: int = 0
    tokens: Tensor | None = None
    padding_known: bool = True
    offset_known: bool = True
    outside_forward: bool = False

    def rows(self, start: int, stop: int) -> "RunContext":
        """The context of rows ``start:stop`` (one group of a stacked pass)."""
        return RunContext(None if self.real is None else self.real[start:stop], self.offset,
                          None if self.tokens is None else self.tokens[start:stop], self.padding_known,
                          self.offset_known, self.outside_forward)


_CURRENT: ContextVar[RunContext | None] = ContextVar("tl_interp_run_context", default=None)


def current() -> RunContext | None:
    """The context of the forward pass in progress, or ``None`` outside tl_interp's runs."""
    return _CURRENT.get()


@contextlib.contextmanager
def running(context: RunContext) -> Iterator[RunContext]:
    """Make ``context`` current for the duration of a ``with`` block (restored on exit)."""
    token = _CURRENT.set(context)
    try:
        yield context
    finally:
        _CURRENT.reset(token)


# -- describing every forward call of a model ----------------------------------------------
_WRAP_LOCK = threading.Lock()
Watcher = Callable[[dict[str, Any]], None]  # sees each forward call's keyword arguments


@contextlib.contextmanager
def describing_calls(model: Any, watcher: Watcher | None = None) -> Iterator[None]:
    """While active, every forward call of ``model`` makes its layout the current run context,
    and ``watcher`` sees each call's keyword arguments (before the call runs).

    ``model.generate`` of a HookedTransformer is wrapped too: a request that would pass the
    context is refused before any step, watchers see it as one whole-model call (so a hook
    that never fires during it is reported), and activations it computes outside the forward
    calls (TransformerLens embeds positions itself) are marked as such. The wrappers are
    installed by the first user and removed by the last (reference counted), so nested and
    concurrent ``applied`` blocks share them and none removes them under another.
    """
    with _WRAP_LOCK:
        forward = installed_forward(model)
        if not getattr(forward, "_tl_interp_contextual", False):
            forward = _wrap(model)
        forward._tl_interp_users += 1  # type: ignore[attr-defined]
        if watcher is not None:
            forward._tl_interp_watchers.append(watcher)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        with _WRAP_LOCK:
            if watcher is not None:
                forward._tl_interp_watchers.remove(watcher)  # type: ignore[attr-defined]
            forward._tl_interp_users -= 1  # type: ignore[attr-defined]
            if forward._tl_interp_users == 0:  # type: ignore[attr-defined]
                uninstall(model, forward._tl_interp_previous)  # type: ignore[attr-defined]


def _wrap(model: Any) -> Callable[..., Any]:
    # a forward/generate the user set on the instance, if any, is restored afterwards (uninstall)
    original_forward, original_generate = model.forward, getattr(model, "generate", None)

    def forward(*args: Any, **kwargs: Any) -> Any:
        context = call_context(model, args, kwargs)
        for watch in list(forward._tl_interp_watchers):  # type: ignore[attr-defined]
            watch(kwargs)
        with running(context):
            return original_forward(*args, **kwargs)

    def generate(*args: Any, **kwargs: Any) -> Any:
        _check_generation(model, args, kwargs)
        for watch in list(forward._tl_interp_watchers):  # type: ignore[attr-defined]
            watch({})  # one whole-model call: every hook is expected to fire
        with running(RunContext(outside_forward=True)):
            return original_generate(*args, **kwargs)  # type: ignore[misc]

    def unchecked_generate(*args: Any, **kwargs: Any) -> Any:
        # A HookedTransformer's generate runs key-value-cached steps whose windows the run context
        # publishes, so every edit is checked per step (context length, sources of the prompt's
        # length, hooks that never fire). Another model's generate (TransformerLens 4's Bridge
        # re-runs the whole sequence each step) gets none of those checks: refused, not guessed.
        raise UnsupportedError(f"generate under tl_interp hooks needs TransformerLens's HookedTransformer: "
                               f"{type(model).__name__} is not one, so its generation steps are not checked against "
                               "the hooks' positions and sources; run the steps yourself (one Intervention.run per "
                               "new token), or generate on TransformerLens 3.9 (HookedTransformer)")

    forward._tl_interp_contextual = True  # type: ignore[attr-defined]
    forward._tl_interp_users = 0  # type: ignore[attr-defined]
    forward._tl_interp_watchers = []  # type: ignore[attr-defined]
    if original_generate is None:
        wrapped_generate = None
    else:
        wrapped_generate = generate if is_hooked_transformer(model) else unchecked_generate
    forward._tl_interp_previous = install(model, forward, wrapped_generate)  # type: ignore[attr-defined]
    return forward


def check_call_tokens(model: Any, inp: Any, kwargs: dict[str, Any], role: str) -> None:
    """Token ids given to a transformer's forward (or ``generate``) call, checked by the one
    input check (``engine.inputs.check_tokens``): residual-stream inputs (``start_at_layer``,
    ``(batch, pos, d_model)`` embeddings), strings and custom models' inputs pass unchecked."""
    if kwargs.get("start_at_layer") is not None or not isinstance(inp, torch.Tensor):
        return
    if inp.ndim == 3 and inp.dtype.is_floating_point:
        return  # input embeddings (batch, pos, d_model)
    from tl_interp.engine.inputs import check_tokens
    from tl_interp.models._adapter import adapt

    if adapt(model).family != "custom":
        check_tokens(model, inp, role)


def _check_generation(model: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse a ``HookedTransformer.generate`` call with bad token ids, or whose last step would
    pass ``n_ctx``."""
    inp = args[0] if args else kwargs.get("input", "")
    check_call_tokens(model, inp, {}, "generate")
    new = args[1] if len(args) > 1 else kwargs.get("max_new_tokens", 10)
    if isinstance(inp, (str, list)):
        inp = model.to_tokens(inp, move_to_device=False, truncate=False)
    if not isinstance(inp, torch.Tensor) or not isinstance(new, int) or inp.ndim == 0:
        return
    length = int(inp.shape[1] if inp.ndim == 3 else inp.shape[-1])  # embeddings (batch, pos, d) or tokens
    # the last new token is sampled, never fed back: the longest step holds length + new - 1 positions
    check_context_length(model, length + new - 1, f"generate ({length} prompt tokens, max_new_tokens={new})")


def call_context(model: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> RunContext:
    """Where a forward call's positions sit: its offset, real tokens and token ids.

    Raises ``InputError`` for a call whose positions would pass the model's context
    (``cfg.n_ctx``): TransformerLens would fail inside the forward pass with an index error.
    """
    inp = args[0] if args else kwargs.get("input", kwargs.get("tokens"))
    check_call_tokens(model, inp, kwargs, "forward")
    if isinstance(inp, (list, tuple)) and len(inp) > 1:
        return RunContext(padding_known=False)
    offset = call_offset(kwargs)
    if offset is None:
        return RunContext(padding_known=False, offset_known=False)
    tokens = inp if isinstance(inp, torch.Tensor) and not inp.dtype.is_floating_point else None
    if tokens is not None and tokens.ndim == 1:
        tokens = tokens[None]
    length = inp.shape[1] if isinstance(inp, torch.Tensor) and inp.ndim >= 2 else None
    if length is not None:
        check_context_length(model, offset + length, "forward")
    mask = kwargs.get("attention_mask")
    if mask is None and tokens is not None and offset == 0:
        mask = tl_default_mask(model, tokens)  # what TL's forward itself computes (left padding)
    real = None
    if isinstance(mask, torch.Tensor):
        real = mask.bool()
        if length is not None and real.shape[1] == length and offset > 0:
            cache = kwargs.get("past_kv_cache")
            previous = kv_previous_mask(cache) if cache is not None else None
            if previous is None or previous.shape[1] != offset:
                previous = torch.ones(real.shape[0], offset, dtype=torch.bool, device=real.device)
            real = torch.cat([previous.bool(), real], 1)
    return RunContext(real=real, offset=offset, tokens=tokens if offset == 0 else None)


def check_context_length(model: Any, total: int, what: str) -> None:
    """Refuse ``total`` positions when the model's context (``cfg.n_ctx``) is shorter.

    Example:
        >>> from types import SimpleNamespace
        >>> check_context_length(SimpleNamespace(cfg=SimpleNamespace(n_ctx=4)), 5, "run")
        Traceback (most recent call last):
        ...
        tl_interp.errors.InputError: run: the sequence would reach 5 positions, past the model's context of n_ctx=4; shorten the input (or max_new_tokens when generating). tl_interp never truncates
    """
    n_ctx = getattr(getattr(model, "cfg", None), "n_ctx", None)
    if isinstance(n_ctx, int) and not isinstance(n_ctx, bool) and 0 < n_ctx < total:
        raise InputError(f"{what}: the sequence would reach {total} positions, past the model's context of "
                         f"n_ctx={n_ctx}; shorten the input (or max_new_tokens when generating). tl_interp never "
                         "truncates")
