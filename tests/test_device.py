"""Devices this torch cannot use are typed errors before any forward pass."""

from typing import Any

import pytest
import torch

import tl_interp as ti
from tests.reliability import no_forward, tiny
from tl_interp.errors import OptionError, TypeCheckError, UnsupportedError


# -- issue 10's reliability probes (formerly tests/test_reliability_inputs.py) --
TOKENS = torch.randint(1, 61, (2, 5), generator=torch.Generator().manual_seed(0))


# -- issue 19, unclear errors: a device this torch cannot use --------------------------------
_NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without a usable CUDA device")


@_NO_CUDA
@pytest.mark.parametrize("call", ["collect", "cache", "load", "load_sae"])
@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda")])
def test_a_cuda_device_on_a_cpu_only_torch_is_a_typed_error_before_any_forward_pass(call: str, device: Any) -> None:
    # was: AssertionError "Torch not compiled with CUDA enabled" after the forward passes
    if call.startswith("load") and not isinstance(device, str):
        pytest.skip("the loaders take device names (str)")
    model = tiny()
    run = {"collect": lambda: ti.collect(model, TOKENS, "blocks.0.hook_resid_post", device=device, progress=False),
           "cache": lambda: ti.hooks.cache("blocks.0.hook_resid_post", device=device),
           "load": lambda: ti.models.load("induction-2l", device=device),
           "load_sae": lambda: ti.models.load_sae("ordinal-4l-res-l2", device=device)}[call]
    message = rf"device={device!r}".replace("(", r"\(").replace(")", r"\)") + \
        r" but (this torch build has no CUDA|no CUDA GPU is visible).*use device='cpu'"
    with no_forward(model), pytest.raises(UnsupportedError, match=message):
        run()


@pytest.mark.parametrize("device", ["cdua", "gpu", 3.5])
def test_a_device_that_is_not_a_device_is_named_with_the_choices(device: Any) -> None:
    model = tiny()
    with no_forward(model), pytest.raises((OptionError, TypeCheckError), match=r"device"):
        ti.collect(model, TOKENS, "blocks.0.hook_resid_post", device=device, progress=False)
