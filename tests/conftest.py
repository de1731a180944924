"""Shared fixtures: small random models of every family tl_interp supports.

Families: GPT-2 style (LayerNorm, GELU, learned positions), Llama style (RMSNorm, rotary,
gated MLP, grouped-query attention), attention-only, sae_lens's HookedSAETransformer,
TransformerBridge in compatibility mode (from a tiny local Hugging Face directory), and a
custom HookedRootModule toy network that is not a transformer.
"""

import os
import warnings
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
warnings.filterwarnings("ignore", message=".*deprecated.*")

from transformer_lens import HookedRootModule  # noqa: E402 - a public top-level name on TL 3.9 and 4.x
from transformer_lens.hook_points import HookPoint  # noqa: E402

from tl_interp.compat.tl import hooked_config_class, hooked_transformer_class  # noqa: E402


from tl_interp.engine.executors import LocalExecutor  # noqa: E402

D_VOCAB = 61
SEQ = 7


def _hooked() -> Any:
    # TransformerLens 4 has no HookedTransformer: the families built from one skip there (the root
    # conftest.py counts them); the Bridge, the custom toy network and everything else still run
    cls = hooked_transformer_class()
    if cls is None:
        # (a module that builds one at import time is skipped whole, and counted so)
        pytest.skip("TL4: needs HookedTransformer (removed in TransformerLens 4)", allow_module_level=True)
    return cls


def hooked_model(cfg: Any, **kwargs: Any) -> Any:
    """``HookedTransformer(cfg)``; on TransformerLens 4, which has none, the calling test is skipped
    with the reason (import it here, not at a test module's top, so the rest of the module runs)."""
    return _hooked()(cfg, **kwargs)


def hooked_class() -> type:
    """``HookedTransformer`` itself (for isinstance checks); skips the calling test on TransformerLens 4."""
    return _hooked()


def _cfg(**overrides: Any) -> Any:
    _hooked()
    base = dict(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, d_vocab=D_VOCAB, n_ctx=32,
                act_fn="gelu_new", normalization_type="LN", seed=0, use_attn_result=True)
    base.update(overrides)
    return hooked_config_class()(**base)


def gpt2_style() -> Any:
    return _hooked()(_cfg()).eval()


def llama_style() -> Any:
    return _hooked()(_cfg(act_fn="silu", normalization_type="RMS", positional_embedding_type="rotary",
                                  rotary_dim=8, gated_mlp=True, final_rms=True, n_key_value_heads=2)).eval()


def attn_only() -> Any:
    return _hooked()(_cfg(attn_only=True, d_mlp=None, act_fn=None)).eval()


def sae_transformer() -> Any:
    _hooked()
    from tl_interp.compat.tl import sae_lens_reason

    if sae_lens_reason() is not None:
        pytest.skip("TL4: needs sae-lens (it requires TransformerLens < 4)", allow_module_level=True)
    from sae_lens import HookedSAETransformer

    return HookedSAETransformer(_cfg()).eval()


class ToyMLP(HookedRootModule):
    """A one-hidden-layer network on pairs (x, y) with HookPoints: not a transformer."""

    def __init__(self, n: int = 12, d_embed: int = 8, d_hidden: int = 16, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W_x = nn.Parameter(torch.randn(n, d_embed, generator=g))
        self.W_y = nn.Parameter(torch.randn(n, d_embed, generator=g))
        self.W = nn.Parameter(torch.randn(2 * d_embed, d_hidden, generator=g) / 4)
        self.W_U = nn.Parameter(torch.randn(d_hidden, n, generator=g) / 4)
        self.hook_embed_x, self.hook_embed_y = HookPoint(), HookPoint()
        self.hook_pre, self.hook_hidden, self.hook_logits = HookPoint(), HookPoint(), HookPoint()
        self.setup()

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        x = self.hook_embed_x(self.W_x[pairs[:, 0]])
        y = self.hook_embed_y(self.W_y[pairs[:, 1]])
        hidden = self.hook_hidden(torch.relu(self.hook_pre(torch.cat([x, y], -1) @ self.W)))
        return self.hook_logits(hidden @ self.W_U)


def bridge_llama(tmp_dir: str) -> Any:
    from transformer_lens.model_bridge import TransformerBridge

    from tl_interp.models._tiny import make_tiny_hf_dir

    path = make_tiny_hf_dir(tmp_dir, "llama", d_model=32, n_heads=4, n_key_value_heads=2, d_mlp=64)
    bridge = TransformerBridge.boot_transformers(str(path))
    bridge.enable_compatibility_mode()
    return bridge.eval()


@dataclass
class Case:
    """A model plus the sites a generic test may use on it (None where the family lacks one)."""

    family: str
    model: Any
    inputs: torch.Tensor
    resid: str
    heads: str | None
    kv: str | None
    mlp: str | None


TRANSFORMER_FAMILIES = ["gpt2", "llama_gqa", "attn_only", "sae_transformer", "bridge"]
ALL_FAMILIES = TRANSFORMER_FAMILIES + ["toy"]


def make_case(family: str, tmp_dir: str) -> Case:
    torch.manual_seed(0)
    tokens = torch.randint(1, D_VOCAB, (3, SEQ))
    if family == "toy":
        pairs = torch.randint(0, 12, (5, 2))
        return Case("toy", ToyMLP(), pairs, "hook_hidden", None, None, "hook_pre")
    model = {"gpt2": gpt2_style, "llama_gqa": llama_style, "attn_only": attn_only,
             "sae_transformer": sae_transformer}.get(family)
    model = bridge_llama(tmp_dir) if family == "bridge" else model()
    if family == "bridge":
        tokens = torch.randint(4, 100, (3, SEQ))
    mlp = None if family == "attn_only" else "blocks.1.mlp.hook_post"
    return Case(family, model, tokens, "blocks.1.hook_resid_pre", "blocks.1.attn.hook_z",
                "blocks.0.attn.hook_k", mlp)


_CASES: dict[str, Case] = {}


@pytest.fixture(params=ALL_FAMILIES)
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Case:
    """Every model family, built once per session."""
    if request.param not in _CASES:
        _CASES[request.param] = make_case(request.param, str(tmp_path_factory.mktemp(request.param)))
    return _CASES[request.param]


@pytest.fixture(params=TRANSFORMER_FAMILIES)
def tcase(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Case:
    """Every transformer family (those with positions and heads)."""
    if request.param not in _CASES:
        _CASES[request.param] = make_case(request.param, str(tmp_path_factory.mktemp(request.param)))
    return _CASES[request.param]


def no_hooks_attached(model: Any) -> bool:
    """True when no forward or backward hook remains on any hook point."""
    return all(not hp.fwd_hooks and not hp.bwd_hooks and not hp._forward_hooks and not hp._backward_hooks
               for hp in model.hook_dict.values())


class PlanRecorder(LocalExecutor):
    """The local executor, keeping the plans it runs: what a study sent to its executor."""

    def __init__(self) -> None:
        super().__init__()
        self.plans: list[Any] = []

    def run(self, plan: Any, *, progress: bool = True, cells: Any = None) -> Any:
        self.plans.append(plan)
        return super().run(plan, progress=False, cells=cells)
