"""One check of a ``device=`` argument, made before any forward pass or load.

A device this torch build cannot use fails late and unclearly otherwise: ``device="cuda"`` on a
CPU-only torch raises an ``AssertionError`` ("Torch not compiled with CUDA enabled") from the
first tensor moved there, after the forward passes before it ran; a typo (``"cdua"``) a bare
``RuntimeError``. ``check_device`` names the argument, the device, what this machine has and
the fix.
"""

from typing import Any

import torch

from tl_interp.errors import OptionError, UnsupportedError

__all__ = ["check_device", "available_devices"]


def available_devices() -> list[str]:
    """The devices this torch build and machine can use (``"cpu"``, ``"cuda:0"``, ..., ``"mps"``)."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def check_device(device: Any, what: str) -> torch.device:
    """``device`` as a ``torch.device`` this machine can use, or a typed error naming the fix.

    Args:
        device: a string (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) or a ``torch.device``.
        what: the function (and argument) it was given to, for the message.

    Example:
        >>> check_device("cpu", "collect")
        device(type='cpu')
        >>> check_device("cdua", "collect")
        Traceback (most recent call last):
        ...
        tl_interp.errors.OptionError: collect: device='cdua' is not a torch device; use one of ['cpu']
    """
    have = available_devices()
    try:
        dev = device if isinstance(device, torch.device) else torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise OptionError(f"{what}: device={device!r} is not a torch device; use one of {have}") from err
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise UnsupportedError(f"{what}: device={device!r} but {build} (torch {torch.__version__}); use "
                                   f"device='cpu', or install a CUDA build of torch on a machine with a GPU")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UnsupportedError(f"{what}: device={device!r} but only {torch.cuda.device_count()} CUDA device(s) "
                                   f"are visible; use one of {have}")
        return dev
    if dev.type == "mps" and "mps" in have:
        return dev
    raise UnsupportedError(f"{what}: device={device!r} is not available on this machine; use one of {have}")
