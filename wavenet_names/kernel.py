"""The kernel of a dilated causal convolution of two taps, the one equation of ConvWaveNet:

    pre[t] = W1 · x[t] + W0 · x[t - d] + b

x[t] is a position's input, x[t - d] the input `dilation` positions back. W0 and W1 are the two taps of
nn.Conv1d's kernel_size=2 weight (n_conv, n_in, 2), which are the lecture's tree Linear weight split
into its halves: [left child | right child]. We apply them as matmuls rather than through Conv1d's
own kernel, which on a CPU is several times slower for these shapes. With both inputs given, the
pair [x[t - d], x[t]] is one matmul against [W0; W1] stacked; a weight laid out that way in memory
(stacked_taps) is read as it lies, which is what a cached step, one character at a time, needs.

Every way of running a layer calls taps(): over every column (ConvWaveNet.forward_full), over packed
names (packing.ExactLayout and FixedLayout), and one character at a time (ConvWaveNet.step). The
kernel is linear, so a layout may apply it in parts: W0 over the padding once per start row, W1 over
every row, then W0 over the rows that reach back into their own name.
"""

import torch
import torch.nn.functional as F


def taps(
    weight: torch.Tensor,
    now: torch.Tensor | None = None,
    back: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """W1 · now + W0 · back + bias, over the last dimension: now (..., n_in) the current inputs, back
    the inputs `dilation` positions back (of the same shape, or one row that broadcasts when now is
    None); weight: Conv1d's (n_conv, n_in, 2), or with both inputs given the same values as
    stacked_taps() lays them out, (2 n_in, n_conv); bias broadcast to (..., n_conv). A part given as
    None is left out: taps(weight, back=x) is W0 · x."""
    if now is None:
        return F.linear(back, weight[..., 0], bias)  # W0: (n_conv, n_in)
    if back is None:
        return F.linear(now, weight[..., 1], bias)  # W1
    stacked = weight if weight.ndim == 2 else stacked_taps(weight)  # (2 n_in, n_conv): [W0^T; W1^T]
    out = torch.cat([back, now], dim=-1) @ stacked  # the pair [x[t - d], x[t]], (..., 2 n_in), at once
    return out if bias is None else out + bias


def stacked_taps(weight: torch.Tensor) -> torch.Tensor:
    """Conv1d's weight (n_conv, n_in, 2) as [W0^T; W1^T], (2 n_in, n_conv): what taps() multiplies the
    pair of inputs by. A copy, which costs more than the matmul itself for one character of 64
    names: a cached step makes it once (DilatedLayer.stacked_weight)."""
    return weight.permute(2, 1, 0).flatten(0, 1)  # (tap, input) rows: a copy, as the weight lies otherwise
