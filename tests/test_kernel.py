"""The dilated kernel (kernel.py), W1 x[t] + W0 x[t - d]: Conv1d's own, its parts by linearity, and the
weight laid out for one character at a time, made again whenever the weight changes."""

import torch
import torch.nn.functional as F

from wavenet_names.kernel import stacked_taps, taps
from wavenet_names.wavenet import DilatedLayer


def test_the_kernel_is_conv1ds_with_kernel_size_2():
    torch.manual_seed(0)
    weight, bias = torch.randn(6, 4, 2, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    back, now = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    pairs = torch.stack([back, now], dim=-1)  # (B, n_in, 2): Conv1d's two columns, x[t - d] then x[t]
    expected = F.conv1d(pairs, weight, bias).squeeze(-1)  # (B, n_conv)
    torch.testing.assert_close(taps(weight, now, back, bias), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(taps(weight, now=now) + taps(weight, back=back, bias=bias), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(taps(weight, back=back[:1]), F.linear(back[:1], weight[..., 0]))  # W0 alone


def test_the_stacked_weight_gives_the_same_kernel_and_follows_every_change_of_the_weight():
    torch.manual_seed(0)
    layer = DilatedLayer(4, 6, dilation=2)
    now, back = torch.randn(3, 4), torch.randn(3, 4)
    assert torch.equal(taps(layer.stacked_weight(), now, back), taps(stacked_taps(layer.conv.weight), now, back))
    torch.testing.assert_close(taps(layer.stacked_weight(), now, back), taps(layer.conv.weight, now, back))
    first = layer.stacked_weight()
    assert layer.stacked_weight() is first  # made once while the weight stays
    with torch.no_grad():
        layer.conv.weight.mul_(2)  # an optimizer step, in place
    assert torch.equal(layer.stacked_weight(), 2 * first)
    layer.load_state_dict({k: torch.zeros_like(v) for k, v in layer.state_dict().items()})
    assert not layer.stacked_weight().any()
