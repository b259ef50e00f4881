"""What a training step computes in. A step of the default model is cheap arithmetic on many small
rows, so on a GPU it is bound by memory traffic and by the matmul units' float32 rate, and fewer bits
buy speed (bench/RESULTS.md, an H200 at 262,144 names: TF32 1.2x, bf16 1.4x over fp32):

    fp32  IEEE float32 throughout: the exact arithmetic, and the only one on a CPU by default
    tf32  float32 tensors, matmuls on a GPU's tensor cores in TensorFloat-32 (a 10-bit mantissa,
          float32 accumulation), as nanoGPT trains; CUDA only
    bf16  torch.autocast to bfloat16: matmuls and activations in 16 bits, weights, optimizer and
          loss in float32
    auto  tf32 on a CUDA GPU, fp32 elsewhere (the default)

Evaluation and sampling always run in float32: the figures a run reports do not depend on how it
was trained.
"""

from contextlib import contextmanager, nullcontext

import torch

from .options import OptionError

PRECISIONS = ("auto", "fp32", "tf32", "bf16")


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision a run on `device` trains in: auto chosen, and tf32 only where it exists."""
    if precision == "auto":
        return "tf32" if device.type == "cuda" else "fp32"
    if precision == "tf32" and device.type != "cuda":
        raise OptionError("precision", "tf32 is a CUDA GPU format; on a CPU use fp32 or bf16")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise OptionError("precision", f"bf16: {torch.cuda.get_device_name(device)} has no bfloat16; use tf32 or fp32")
    return precision


@contextmanager
def matmuls(precision: str):
    """While inside, float32 CUDA matmuls run in TF32 when precision is tf32 (and in IEEE float32
    otherwise). Wrap the backward pass as well as the forward: half of a step's matmuls are there.
    Restores the process's setting on the way out."""
    cuda = torch.backends.cuda.matmul
    new_api = hasattr(cuda, "fp32_precision")  # torch >= 2.9; mixing it with allow_tf32 is an error
    previous = cuda.fp32_precision if new_api else cuda.allow_tf32
    if new_api:
        cuda.fp32_precision = "tf32" if precision == "tf32" else "ieee"
    else:
        cuda.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        if new_api:
            cuda.fp32_precision = previous
        else:
            cuda.allow_tf32 = previous


def autocast(precision: str, device: torch.device):
    """The forward pass's context: bf16 autocast, or nothing. Backward follows the forward's dtypes
    on its own and should run outside it."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
