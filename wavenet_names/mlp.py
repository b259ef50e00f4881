"""The lecture's per-position models: every window of block_size characters is run on its own.

- FlatMLP: the lecture's baseline (Bengio et al. 2003): all block_size embeddings in one Linear.
- HierarchicalMLP: the lecture's "WaveNet" tree: pairs, pairs of pairs, ...

Both follow the package's contract, forward(idx, targets=None) -> (logits, loss), with -1 targets
ignored by the loss.
"""

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .layers import BatchDimOnlyBatchNorm, BatchNorm, FlattenConsecutive

if TYPE_CHECKING:
    from .wavenet import ConvWaveNet


def _loss(logits: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor | None:
    if targets is None:
        return None
    return F.cross_entropy(_widened(logits.reshape(-1, logits.shape[-1])), targets.reshape(-1), ignore_index=-1)


def _widened(logits: torch.Tensor) -> torch.Tensor:
    """Logits for a loss, at least float32: bf16 ones under autocast are widened (the loss sums many
    small terms), float64 ones are kept."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def _init_lecture(model: nn.Module) -> None:
    """The lecture's initialisation: N(0, 1) embeddings, N(0, 1/fan_in) weights, zero biases, and the
    output layer scaled by 0.1 so that the first predictions are nearly uniform."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight)
            elif isinstance(m, (nn.Linear, nn.Conv1d)):
                fan_in = m.weight[0].numel()  # in_features, or in_channels * kernel_size
                nn.init.normal_(m.weight, std=fan_in**-0.5)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        model.lm_head.weight *= 0.1


class FlatMLP(nn.Module):
    """Embedding, flatten all block_size embeddings, Linear (no bias), BatchNorm, Tanh, Linear."""

    def __init__(self, vocab_size: int, n_embd: int, n_hidden: int, block_size: int):
        super().__init__()
        self.block_size = block_size
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.hidden = nn.Sequential(
            nn.Linear(block_size * n_embd, n_hidden, bias=False), BatchNorm(n_hidden), nn.Tanh()
        )
        self.lm_head = nn.Linear(n_hidden, vocab_size)
        _init_lecture(self)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        x = rearrange(self.wte(idx), "b t c -> b (t c)")  # (B, block_size * n_embd)
        logits = self.lm_head(self.hidden(x))  # (B, vocab)
        return logits, _loss(logits, targets)


class HierarchicalMLP(nn.Module):
    """The lecture's tree, evaluated for each window on its own: block_size = 2**n_layers characters
    are fused in pairs, then pairs of pairs, ..., by n_layers [FlattenConsecutive(2), Linear, BatchNorm,
    Tanh] layers. A window costs 2**n_layers - 1 node evaluations; see ConvWaveNet for the shared way."""

    def __init__(self, vocab_size: int, n_embd: int, n_hidden: int, n_layers: int, batchnorm_bug: bool = False):
        super().__init__()
        self.block_size = 2**n_layers
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.tree = nn.ModuleList(
            nn.Sequential(
                FlattenConsecutive(2),
                nn.Linear(2 * (n_embd if i == 0 else n_hidden), n_hidden, bias=False),
                BatchDimOnlyBatchNorm(n_hidden, positions=2 ** (n_layers - i - 1))
                if batchnorm_bug
                else BatchNorm(n_hidden),
                nn.Tanh(),
            )
            for i in range(n_layers)
        )
        self.lm_head = nn.Linear(n_hidden, vocab_size)
        _init_lecture(self)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        x = self.wte(idx)  # (B, block_size, n_embd)
        for layer in self.tree:
            x = layer(x)  # (B, T/2, n_hidden), and (B, n_hidden) at the top
        logits = self.lm_head(x)  # (B, vocab)
        return logits, _loss(logits, targets)

    @classmethod
    def from_conv(cls, conv: "ConvWaveNet") -> "HierarchicalMLP":
        """A tree that computes the same function as `conv`: same weights, same BatchNorm buffers."""
        if not conv.blocks.lecture:
            raise ValueError(f"only the lecture's configuration has a tree equivalent, not {conv.blocks}")
        model = _empty_like(cls, conv)
        with torch.no_grad():
            for node, layer in zip(model.tree, conv.layers, strict=True):
                node[1].weight.copy_(rearrange(layer.conv.weight, "h c k -> h (k c)"))
                node[2].load_state_dict(layer.norm.state_dict())
        return model


def _empty_like(cls, src: nn.Module) -> nn.Module:
    """A `cls` of the same sizes, dtype, device and mode as `src`, sharing its embedding and head weights."""
    vocab_size, n_embd = src.wte.weight.shape
    n_hidden, n_layers = src.lm_head.in_features, len(src.tree if hasattr(src, "tree") else src.layers)
    model = cls(vocab_size, n_embd, n_hidden, n_layers).to(src.wte.weight)
    with torch.no_grad():
        model.wte.weight.copy_(src.wte.weight)
        model.lm_head.load_state_dict(src.lm_head.state_dict())
    return model.train(src.training)
