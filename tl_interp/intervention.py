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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tl_interp._types import HookFn, NameFilter
from tl_interp.sites import SiteInfo, describe_where, resolve, site_info

__all__ = ["Hook", "Intervention", "HookBuilder"]

# Given the resolved hook name and its layout, return the hook function to register there.
# Builders validate what they can (indices, widths) and raise before anything runs.
HookBuilder = Callable[[str, SiteInfo], HookFn]


@dataclass(frozen=True)
class Hook:
    """One edit (or read) at one place: where, how to build the hook function, what it does."""

    where: NameFilter
    build: HookBuilder
    description: str

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
            raise TypeError("Intervention.single takes exactly one of fn= or build=")
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

        Args:
            model: any TransformerLens HookedRootModule.
            seq_len: the input length when known, so position selections are range-checked too.

        Returns:
            ``(hook name, hook function)`` pairs in order, the form TransformerLens's
            ``run_with_hooks(fwd_hooks=...)`` takes.
        """
        bound: list[tuple[str, HookFn]] = []
        for hook in self.hooks:
            for name in resolve(model, hook.where, context=hook.description):
                info = site_info(model, name)
                if info.axes is not None:  # only TransformerLens layouts tie pos to the input
                    info = dataclasses.replace(info, seq_len=seq_len)
                bound.append((name, hook.build(name, info)))
        return bound

    def validate(self, model: Any, *, seq_len: int | None = None) -> None:
        """Raise the error a run would hit (names, indices, widths), without running."""
        self.bind(model, seq_len=seq_len)

    @contextlib.contextmanager
    def applied(self, model: Any, *, seq_len: int | None = None) -> Iterator[Any]:
        """Attach the hooks for the duration of a ``with`` block; always detach them.

        Only the hooks this call registers are removed, on every exit path (exceptions and
        KeyboardInterrupt included); hooks the user attached before are left in place.

        Example:
            >>> import torch
            >>> from transformer_lens import HookedTransformer, HookedTransformerConfig
            >>> from tl_interp import hooks, site
            >>> cfg = HookedTransformerConfig(n_layers=1, d_model=8, n_heads=2, d_head=4,
            ...                               n_ctx=4, d_vocab=5, act_fn="relu", d_mlp=16)
            >>> model = HookedTransformer(cfg)
            >>> with hooks.zero_ablate(site("mlp_out", 0)).applied(model):
            ...     logits = model(torch.tensor([[1, 2, 3]]))
            >>> model.hook_dict["blocks.0.hook_mlp_out"].fwd_hooks
            []
        """
        bound = self.bind(model, seq_len=seq_len)
        hook_dict = model.hook_dict
        registered: list[tuple[Any, Any]] = []
        try:
            for name, fn in bound:
                point = hook_dict[name]
                before = list(point.fwd_hooks)
                point.add_hook(fn, dir="fwd")
                handle = next(h for h in point.fwd_hooks if not any(h is b for b in before))
                registered.append((point, handle))
            yield model
        finally:
            for point, handle in reversed(registered):
                handle.hook.remove()
                point.fwd_hooks = [h for h in point.fwd_hooks if h is not handle]

    def run(self, model: Any, *args: Any, **kwargs: Any) -> Any:
        """Run ``model(*args, **kwargs)`` under this intervention and return its output.

        Example:
            >>> import torch
            >>> from transformer_lens import HookedTransformer, HookedTransformerConfig
            >>> cfg = HookedTransformerConfig(n_layers=1, d_model=8, n_heads=2, d_head=4,
            ...                               n_ctx=4, d_vocab=5, act_fn="relu", d_mlp=16)
            >>> model, tokens = HookedTransformer(cfg), torch.tensor([[1, 2, 3]])
            >>> torch.equal(Intervention.identity().run(model, tokens), model(tokens))
            True
        """
        with self.applied(model, seq_len=_seq_len_of(args, kwargs)):
            return model(*args, **kwargs)


def _seq_len_of(args: Sequence[Any], kwargs: dict[str, Any]) -> int | None:
    """The token length of a forward call's input when it is a tensor (for range checks)."""
    first = args[0] if args else kwargs.get("input", kwargs.get("tokens"))
    if isinstance(first, torch.Tensor) and first.dtype in (torch.int64, torch.int32) and first.ndim in (1, 2):
        return int(first.shape[-1])
    return None
