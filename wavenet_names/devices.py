"""Devices: what --device names, checked in one line before any work.

"auto" is a CUDA GPU when there is one, else the CPU. Any torch device string names one on its own:
cpu, cuda, cuda:1 (the second GPU), mps (Apple Silicon's GPU) or xpu (Intel's).
"""

import torch

from .options import OptionError

ACCELERATORS = ("cuda", "mps", "xpu")  # the accelerators a run may be given, beside the cpu
DEVICE_HELP = "auto: cuda when there is a GPU, else cpu; or any torch device: cpu, cuda, cuda:1, mps, xpu"


def parse_device(name: str) -> torch.device | None:
    """`name` as a torch device (None for auto), or OptionError if it names none that we run on.
    Whether this machine has it is resolve_device's question: a run saved on a GPU reads anywhere."""
    if name == "auto":
        return None
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise OptionError("device", f"{name!r} is not a device: auto, cpu, cuda, cuda:1, mps, xpu") from None
    if device.type != "cpu" and device.type not in ACCELERATORS:
        raise OptionError("device", f"{name}: a run takes cpu, {', '.join(ACCELERATORS)}, not {device.type}")
    return device


def resolve_device(name: str) -> torch.device:
    """The device `name` names on this machine; OptionError, in one line, if it has no such device."""
    device = parse_device(name)
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        return device
    backend = torch.backends.mps if device.type == "mps" else getattr(torch, device.type)
    if not backend.is_available():
        raise OptionError("device", f"{name}: {device.type} is not available on this machine; use cpu")
    count = backend.device_count() if hasattr(backend, "device_count") else 1  # (one mps device)
    if device.index is not None and device.index >= count:
        devices = "1 device" if count == 1 else f"{count} devices"
        raise OptionError("device", f"{name}: this machine has {devices} of type {device.type}, numbered from 0")
    return device


def float64_on(device: torch.device) -> bool:
    """Whether `device` computes in float64 (Apple's mps does not): where a sum of many losses may stay."""
    return device.type != "mps"
