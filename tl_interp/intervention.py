"""Interventions: ordered, immutable, printable collections of TransformerLens hooks.

An ``Intervention`` is data (after penzai's ``KnockOutAttentionHeads``): a tuple of ``Hook``s,
each saying *where* (a hook name or a name filter), *what* (a builder that turns the resolved
hook name and its layout into a TransformerLens hook function) and a one-line description.
``+`` composes; hooks at the same point run in order. Binding an intervention to a model
resolves names and checks indices and widths against the model's config, so mistakes fail
before any forward pass. ``applied(model)`` owns every registration it makes and removes
exactly those on every exit path, leaving a user's own hooks alone.
"""

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tl_interp._context import check_call_tokens, check_context_length, describing_calls
from tl_interp._types import HookFn, NameFilter
from tl_interp.compat import silent_reason
from tl_interp.compat.hook_points import add_forward_hook, remove_forward_hook
from tl_interp.errors import HookNameError, InputError, TypeCheckError
from tl_interp.engine.inputs import Inputs
from tl_interp.sites import SiteInfo, describe_where, resolve, site_info

__all__ = ["Hook", "Intervention", "HookBuilder", "Firing"]

# Given the resolved hook name and its layout, return the hook function to register there.
# Builders validate what they can (indices, widths) and raise before anything runs.
HookBuilder = Callable[[str, SiteInfo], HookFn]


@dataclass(frozen=True)
class Hook:
    """One edit (or read) at one place: where, how to build the hook function, what it does."""

    where: NameFilter
    build: HookBuilder
    description: str
    reads_only: bool = False  # a cache: binds every alias name (edits bind each hook point once)

    def __str__(self) -> str:
        return self.description


def _freeze_where(where: NameFilter) -> NameFilter:
    if isinstance(where, str) or callable(where):
        return where
    return tuple(where)


@dataclass(frozen=True)
class Intervention:
    """An ordered, immutable collection of hooks, composable with ``+``.

    Example:
        >>> from tl_interp import hooks, site
        >>> iv = hooks.zero_ablate(site("z", 1), heads=[3]) + hooks.scale(site("mlp_out", 0), 0.5)
        >>> print(iv)
        Intervention (2 hooks):
          1. zero-ablate (heads [3]) at blocks.1.attn.hook_z
          2. scale by 0.5 at blocks.0.hook_mlp_out
    """

    hooks: tuple[Hook, ...] = ()

    @classmethod
    def single(cls, where: NameFilter, fn: HookFn | None = None, description: str | None = None,
               *, build: HookBuilder | None = None) -> "Intervention":
        """An intervention of one hook: a plain TransformerLens hook function, or a builder.

        Args:
            where: hook name, list of names, or predicate over names.
            fn: a TransformerLens hook function ``fn(activation, hook) -> activation | None``.
            description: what the hook does, for ``print``; defaults to the function's name.
            build: instead of ``fn``, a builder ``(name, SiteInfo) -> hook function``.

        Example:
            >>> iv = Intervention.single("blocks.0.hook_resid_pre", lambda act, hook: act * 2, "double")
            >>> print(iv)
            Intervention (1 hook):
              1. double at blocks.0.hook_resid_pre
        """
        if (fn is None) == (build is None):
            raise TypeCheckError("Intervention.single takes exactly one of fn= or build=")
        if build is None:
            plain = fn
            build = lambda name, info: plain  # noqa: E731 - a plain hook needs no per-site state
            label = description or getattr(fn, "__name__", "hook")
            description = f"{label} at {describe_where(where)}"
        elif description is None:
            description = f"{getattr(build, '__name__', 'hook')} at {describe_where(where)}"
        return cls((Hook(_freeze_where(where), build, description),))

    @classmethod
    def identity(cls) -> "Intervention":
        """The empty intervention: running under it is running the model unchanged."""
        return cls(())

    def __add__(self, other: object) -> "Intervention":
        if not isinstance(other, Intervention):
            return NotImplemented
        return Intervention(self.hooks + other.hooks)

    def __radd__(self, other: object) -> "Intervention":
        if isinstance(other, int) and other == 0:  # lets sum([...]) compose a list
            return self
        return NotImplemented

    def __len__(self) -> int:
        return len(self.hooks)

    def __iter__(self) -> Iterator[Hook]:
        return iter(self.hooks)

    def __str__(self) -> str:
        if not self.hooks:
            return "Intervention (identity: no hooks)"
        noun = "hook" if len(self.hooks) == 1 else "hooks"
        lines = [f"Intervention ({len(self.hooks)} {noun}):"]
        lines += [f"  {i}. {h.description}" for i, h in enumerate(self.hooks, 1)]
        return "\n".join(lines)

    def __repr__(self) -> str:
        inner = "; ".join(h.description for h in self.hooks)
        return f"Intervention({inner})"

    def _repr_html_(self) -> str:
        """The hooks in order, as HTML, for notebooks."""
        from tl_interp.viz.html import intervention_html

        return intervention_html(self)

    @property
    def descriptions(self) -> tuple[str, ...]:
        """One line per hook, in order (recorded in results' provenance)."""
        return tuple(h.description for h in self.hooks)

    def bind(self, model: Any, *, seq_len: int | None = None) -> list[tuple[str, HookFn]]:
        """Resolve names and build hook functions for ``model``: every check, no forward pass.

        A name filter that matches two names of one hook point (TransformerBridge aliases such
        as ``blocks.1.hook_in`` and ``blocks.1.hook_resid_pre``) binds it once. A hook point
        that exists but never fires with the model's configuration (``attn.hook_result``
        without ``use_attn_result``, an MLP site on an attention-only model ...) is an error
        when named; a predicate skips such points (an error only if it matches nothing else).

        Args:
            model: any TransformerLens HookedRootModule.
            seq_len: the input length when known, so position selections are range-checked too.

        Returns:
            ``(hook name, hook function)`` pairs in order, the form TransformerLens's
            ``run_with_hooks(fwd_hooks=...)`` takes. Selections that follow padding
            (``positions="last"`` ...) need the run's attention mask: use ``run`` or
            ``applied``, which pass it to the hooks.
        """
        return [(name, fn) for name, fn, _ in self._bind(model, seq_len)]

    def _bind(self, model: Any, seq_len: int | None,
              memo: dict[Any, Any] | None = None) -> list[tuple[str, HookFn, int]]:
        """``bind``, recording for each entry the index of its hook when that hook is a name
        filter (-1 for a named hook point). ``memo``: a dict shared by binds of several
        interventions to one model in one go (the engine's cells): each hook name given by
        name is resolved and checked once there (the same answers: nothing changes between)."""
        bound: list[tuple[str, HookFn, int]] = []
        for index, hook in enumerate(self.hooks):
            is_filter = callable(hook.where) and not isinstance(hook.where, str)
            key = None if memo is None or is_filter else (hook.where, hook.reads_only, seq_len)
            if key is not None and key in memo:
                names, silent, infos = memo[key]
            else:
                names = resolve(model, hook.where, context=hook.description, dedupe=not hook.reads_only)
                silent = {name: silent_reason(model, name) for name in names}
                infos = {}
                if key is not None:
                    memo[key] = (names, silent, infos)
            if is_filter:
                # a predicate means "wherever it applies": skip points that never fire, unless all do
                live = tuple(n for n in names if silent[n] is None)
                names = live or names[:1]
            for name in names:
                if silent[name] is not None:
                    raise HookNameError(f"{hook.description}: the hook point {name!r} never fires on this model: "
                                        f"{silent[name]}")
                info = infos.get(name)
                if info is None:
                    info = site_info(model, name)
                    if info.axes is not None:  # only TransformerLens layouts tie pos to the input
                        info = dataclasses.replace(info, seq_len=seq_len)
                    infos[name] = info
                bound.append((name, hook.build(name, info), index if is_filter else -1))
        return bound

    def validate(self, model: Any, *, seq_len: int | None = None) -> None:
        """Raise the error a run would hit (names, indices, widths), without running."""
        self.bind(model, seq_len=seq_len)

    @contextlib.contextmanager
    def applied(self, model: Any, *, seq_len: int | None = None) -> Iterator[Any]:
        """Attach the hooks for the duration of a ``with`` block; always detach them.

        Only the hooks this call registers are removed, on every exit path (exceptions and
        KeyboardInterrupt included); hooks the user attached before are left in place. The
        hooks act only in the thread that applied them. While applied, every forward call of
        the model tells the hooks where its positions sit (its attention mask, and the offset
        of a key-value-cached generation step), so ``positions=3`` keeps meaning position 3 of
        the sequence during ``model.generate`` and ``positions="last"`` each row's last real
        token. When the block ends normally, a hook that never ran although a forward call
        covered its point is an error (a hook point this model never computes, e.g. on a
        TransformerBridge), as is a ``model.generate`` request that would pass ``n_ctx``.

        Yields:
            The model.

        Example:
            >>> import torch
            >>> from transformer_lens import HookedTransformer, HookedTransformerConfig
            >>> from tl_interp import hooks, site
            >>> cfg = HookedTransformerConfig(n_layers=1, d_model=8, n_heads=2, d_head=4,
            ...                               n_ctx=4, d_vocab=5, act_fn="relu", d_mlp=16)
            >>> model = HookedTransformer(cfg)
            >>> with hooks.zero_ablate(site("mlp_out", 0)).applied(model):
            ...     logits = model(torch.tensor([[1, 2, 3]]))
            >>> from tl_interp.compat.hook_points import attached_hooks
            >>> attached_hooks(model.hook_dict["blocks.0.hook_mlp_out"])
            0
        """
        with self.counted(model, seq_len=seq_len) as firing:
            yield model
        firing.check(self)  # a hook that never ran although a forward call covered its point

    @contextlib.contextmanager
    def counted(self, model: Any, *, seq_len: int | None = None) -> Iterator["Firing"]:
        """``applied``, yielding a ``Firing`` record of how many times each bound hook ran."""
        bound = self._bind(model, seq_len)
        owner = threading.get_ident()
        firing = Firing([name for name, _, _ in bound], [group for _, _, group in bound], owner=owner)
        hook_dict = model.hook_dict
        registered: list[tuple[Any, Any]] = []
        with describing_calls(model, firing.observe):
            try:
                for i, (name, fn, _) in enumerate(bound):
                    point = hook_dict[name]
                    registered.append((point, add_forward_hook(point, _scoped(fn, firing, i, owner))))
                yield firing
            finally:
                for point, handle in reversed(registered):
                    remove_forward_hook(point, handle)

    def run(self, model: Any, inputs: Inputs | None = None, *args: Any, **kwargs: Any) -> Any:
        """Run the model on ``inputs`` under this intervention and return its output.

        Strings and lists of strings are tokenised by tl_interp (one by one, right-padded,
        with an attention mask; never truncated) so that padding-aware selections know where
        each row ends; token tensors go to the model as they are, after the one token check
        every entry point uses (``engine.inputs.check_tokens``: integer ids in ``0..d_vocab-1``,
        shape ``(pos,)`` or ``(batch, pos)``). Every bound hook must fire: one that never ran
        (its site is not computed by this model) is an error, unless the call skipped its part
        of the model (before ``start_at_layer``, from ``stop_at_layer``).

        Example:
            >>> import torch
            >>> from transformer_lens import HookedTransformer, HookedTransformerConfig
            >>> cfg = HookedTransformerConfig(n_layers=1, d_model=8, n_heads=2, d_head=4,
            ...                               n_ctx=4, d_vocab=5, act_fn="relu", d_mlp=16)
            >>> model, tokens = HookedTransformer(cfg), torch.tensor([[1, 2, 3]])
            >>> torch.equal(Intervention.identity().run(model, tokens), model(tokens))
            True
        """
        if "input" in kwargs or "tokens" in kwargs:
            inputs = kwargs.pop("input", kwargs.pop("tokens", None))
        if isinstance(inputs, str) or (isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], str)):
            from tl_interp.engine.inputs import as_batch

            if "attention_mask" in kwargs:
                raise InputError("run: attention_mask goes with token ids; strings get their own mask")
            batch = as_batch(model, inputs, prepend_bos=kwargs.pop("prepend_bos", None))
            inputs = batch.tokens
            if batch.padded:
                kwargs["attention_mask"] = batch.attention_mask
        check_call_tokens(model, inputs, kwargs, "run")  # the one token check, before binding any hook
        seq_len = _seq_len_of((inputs, *args), kwargs)
        if seq_len is not None:  # before binding: TransformerLens would fail inside the forward pass
            check_context_length(model, seq_len, "run")
        with self.counted(model, seq_len=seq_len) as firing:
            out = model(inputs, *args, **kwargs)
        firing.check(self)
        return out


@dataclass
class Firing:
    """How many times each hook of an applied intervention ran (in bind order).

    ``predicate[i]`` is the index of the name-filter hook entry ``i`` came from (or -1 for a
    named hook point): a filter means "wherever it applies", so it fails only if none of its
    points ran.
    """

    names: list[str]
    predicate: list[int]
    counts: list[int] = dataclasses.field(default_factory=list)
    owner: int | None = None  # the thread that applied the hooks (calls of other threads are not counted)
    # (start_at_layer, stop_at_layer) of each forward call in the owner thread while applied
    calls: list[tuple[int | None, int | None]] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.names)

    def observe(self, kwargs: dict[str, Any]) -> None:
        """Record one forward call (its keyword arguments) made while the hooks are applied."""
        if self.owner is None or threading.get_ident() == self.owner:
            self.calls.append((kwargs.get("start_at_layer"), kwargs.get("stop_at_layer")))

    def covered(self, name: str) -> bool:
        """Whether some recorded call ran the part of the model where ``name`` sits."""
        layer = _block_of(name)
        for start, stop in self.calls:
            if layer is not None and (start is None or layer >= start) and (stop is None or layer < stop):
                return True
            if layer is None and (stop is None if name.startswith(_AFTER_BLOCKS) else start is None):
                return True
        return False

    def check(self, intervention: "Intervention") -> None:
        """Raise if a hook never ran: its site is not computed by this model."""
        ran_by_filter: dict[int, bool] = {}
        for group, count in zip(self.predicate, self.counts):
            if group >= 0:
                ran_by_filter[group] = ran_by_filter.get(group, False) or count > 0
        silent = [name for name, group, count in zip(self.names, self.predicate, self.counts)
                  if count == 0 and (group < 0 or not ran_by_filter[group]) and self.covered(name)]
        if silent:
            raise HookNameError(f"{'; '.join(intervention.descriptions)}: the hook point(s) {silent} never fired "
                                "during the forward pass: this model does not compute those activations (check "
                                "its config switches, e.g. use_attn_result, or the architecture)")


_AFTER_BLOCKS = ("ln_final.", "unembed.", "hook_unembed")  # model-level points after the blocks


def _block_of(name: str) -> int | None:
    """The block index of a hook name (``blocks.3.`` ...), or None for model-level points."""
    parts = name.split(".")
    return int(parts[1]) if len(parts) > 2 and parts[0] == "blocks" and parts[1].isdigit() else None


def _scoped(fn: HookFn, firing: Firing, index: int, owner: int) -> HookFn:
    """``fn`` counted, and acting only in the thread that applied it."""

    def scoped(act: Any, hook: Any) -> Any:
        if threading.get_ident() != owner:
            return None
        firing.counts[index] += 1
        return fn(act, hook=hook)

    scoped.__name__ = getattr(fn, "__name__", "hook")
    return scoped


def _seq_len_of(args: Sequence[Any], kwargs: dict[str, Any]) -> int | None:
    """The token length of a forward call's input when it is a tensor (for range checks)."""
    first = args[0] if args else kwargs.get("input", kwargs.get("tokens"))
    if isinstance(first, torch.Tensor) and first.dtype in (torch.int64, torch.int32) and first.ndim in (1, 2):
        return int(first.shape[-1])
    return None
