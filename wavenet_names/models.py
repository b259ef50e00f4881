"""The three models of makemore part 5, one contract: forward(idx, targets=None) -> (logits, loss).

- FlatMLP: the lecture's baseline (Bengio et al. 2003): all block_size embeddings in one Linear.
- HierarchicalMLP: the lecture's "WaveNet" tree, run per position: pairs, pairs of pairs, ...
- ConvWaveNet: the same tree as dilated causal convolutions slid over whole names (WaveNet,
  arXiv:1609.03499), computing every tree node once per position instead of once per window.

Targets of -1 are padding: ignored by the loss (and, in ConvWaveNet, by the BatchNorm statistics).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .layers import BatchDimOnlyBatchNorm, BatchNorm, FlattenConsecutive


@dataclass
class ModelConfig:
    """What a checkpoint needs to rebuild a model. block_size is the context length for `flat`;
    the tree models see 2**n_layers characters."""

    kind: str = "conv"  # conv | hierarchical | flat
    vocab_size: int = 27
    n_embd: int = 24
    n_hidden: int = 128
    n_layers: int = 3
    block_size: int | None = None  # flat only; None means 2**n_layers
    batchnorm_bug: bool = False  # hierarchical only: the lecture's batch-dimension-only statistics

    def __post_init__(self):
        if self.kind not in MODELS:
            raise ValueError(f"model kind must be one of {', '.join(MODELS)}, got {self.kind!r}")
        for name in ("vocab_size", "n_embd", "n_hidden", "n_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.block_size is not None and self.block_size < 1:
            raise ValueError(f"block-size must be at least 1, got {self.block_size}")
        if self.batchnorm_bug and self.kind != "hierarchical":
            raise ValueError("the lecture's batch-norm bug is an option of the hierarchical model only")

    @property
    def context(self) -> int:
        """How many characters the model sees before the one it predicts."""
        if self.kind == "flat" and self.block_size is not None:
            return self.block_size
        return 2**self.n_layers


def build_model(config: ModelConfig) -> nn.Module:
    if config.kind == "flat":
        return FlatMLP(config.vocab_size, config.n_embd, config.n_hidden, config.context)
    if config.kind == "hierarchical":
        return HierarchicalMLP(config.vocab_size, config.n_embd, config.n_hidden, config.n_layers, config.batchnorm_bug)
    return ConvWaveNet(config.vocab_size, config.n_embd, config.n_hidden, config.n_layers)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _loss(logits: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor | None:
    if targets is None:
        return None
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-1)


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
        model = _empty_like(cls, conv)
        with torch.no_grad():
            for node, layer in zip(model.tree, conv.layers, strict=True):
                node[1].weight.copy_(rearrange(layer.conv.weight, "h c k -> h (k c)"))
                node[2].load_state_dict(layer.norm.state_dict())
        return model


class DilatedLayer(nn.Module):
    """One level of the tree as a causal convolution: out[t] = tanh(BN(W0 x[t - dilation] + W1 x[t])).

    W0 and W1 are the two taps of an nn.Conv1d(kernel_size=2) weight, which is the tree's Linear
    weight split in its left and right halves. We apply them as two matmuls rather than through
    Conv1d's kernel, which on a CPU is several times slower for this shape.
    """

    def __init__(self, n_in: int, n_out: int, dilation: int):
        super().__init__()
        self.dilation = dilation
        self.conv = nn.Conv1d(n_in, n_out, kernel_size=2, dilation=dilation, bias=False)
        self.norm = BatchNorm(n_out)

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """left: the inputs `dilation` steps back (or one row that broadcasts), right: the current
        inputs, both (..., n_in). Returns (..., n_out)."""
        w0, w1 = self.conv.weight.unbind(-1)  # (n_out, n_in) each
        return self.activate(F.linear(right, w1) + F.linear(left, w0))

    def activate(self, x: torch.Tensor, shared_first_row: bool = False) -> torch.Tensor:
        return torch.tanh(self.norm(x, shared_first_row))

    def forward_packed(self, h: torch.Tensor, far: torch.Tensor, near: torch.Tensor) -> torch.Tensor:
        """h (1 + R, n_in): the all-'.' node, then the packed characters of a batch of names.

        A position more than `dilation` columns into its name (`far`) has its left input `dilation`
        rows back in h; every other position (`near`) reaches into the padding, where the left input
        is the all-'.' node h[0]: that half of the kernel is computed once and shared.
        """
        w0, w1 = self.conv.weight.unbind(-1)  # (n_out, n_in) each
        x = F.linear(h, w1)  # (N, n_out): the current inputs
        x = x.index_add(0, near, F.linear(h[:1], w0).expand(len(near), -1))  # the padding, once
        if len(far):
            x = x.index_add(0, far, F.linear(h[far - self.dilation], w0))  # (N, n_out)
        return self.activate(x, shared_first_row=True)


class ConvWaveNet(nn.Module):
    """The lecture's tree as n_layers causal convolutions of kernel 2 and dilations 1, 2, 4, ...

    idx (B, T): each row is block_size '.' tokens, then a name, right-padded. Output j predicts the
    character after idx[:, j : j + block_size], so logits are (B, T - block_size + 1, vocab), and
    targets, of the same shape, are -1 at padding.

    How the padding is made free (the reason this model exists):
    - The left padding. A node whose receptive field holds only '.' tokens has the same value for
      every name, so it is computed once per layer for the whole batch, in row 0 of a packed
      sequence, instead of once per '.' column of every name. Row 0 is also every name's first
      output ('........ -> e'). A position whose left input lies `dilation` steps back in the
      padding reads row 0, which holds exactly what the padding columns would have held.
    - The right padding. Positions with target -1 are dropped before the first layer: the real
      characters of all names follow row 0, packed into one (1 + R, C) sequence, so a left input
      inside the same name is exactly `dilation` rows back. Padding costs no compute, and it does
      not enter the BatchNorm statistics.
    A batch of names thus costs at most n_layers node evaluations per predicted character (fewer:
    a left input in the padding is the shared row, whose half of the kernel is computed once),
    against 2**n_layers - 1 for HierarchicalMLP. When idx does not start with block_size '.' tokens
    (e.g. the lecture's windows themselves) the model runs as a plain valid convolution over every
    column.

    In training mode the BatchNorm statistics are those of the nodes computed: every distinct node
    once, the all-'.' nodes included, while HierarchicalMLP recomputes a node for every window that
    contains it and counts it that many times. So the two models compute the same function in eval
    mode, where both use the running estimates, and not in training mode.
    """

    def __init__(self, vocab_size: int, n_embd: int, n_hidden: int, n_layers: int):
        super().__init__()
        self.block_size = 2**n_layers
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.layers = nn.ModuleList(
            DilatedLayer(n_embd if i == 0 else n_hidden, n_hidden, dilation=2**i) for i in range(n_layers)
        )
        self.lm_head = nn.Linear(n_hidden, vocab_size)
        _init_lecture(self)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        B, T = idx.shape
        n_out = T - self.block_size + 1
        if n_out < 1:
            raise ValueError(f"idx needs at least block_size={self.block_size} columns, got {T}")
        if targets is not None and targets.shape != (B, n_out):
            raise ValueError(f"targets must be (B, T - block_size + 1) = {(B, n_out)}, got {tuple(targets.shape)}")
        if not bool((idx[:, : self.block_size] == 0).all()):
            logits = self._forward_full(idx)
            return logits, _loss(logits, targets)
        valid = self._valid_positions(targets, idx, n_out)  # (B, n_out) bool, True where predicted
        real = valid[:, 1:]  # (B, n_out - 1): the positions whose last input is a real character
        rows = torch.zeros_like(valid, dtype=torch.long)  # (B, n_out): each position's packed row
        rows[:, 1:][real] = torch.arange(1, int(real.sum()) + 1, device=idx.device)  # column 0 is row 0
        tokens = F.pad(idx[:, self.block_size :][real], (1, 0))  # (1 + R,): '.', then every character
        col = F.pad(real.nonzero(as_tuple=True)[1] + 1, (1, 0))  # (1 + R,): the column in its name
        h = self.wte(tokens)  # (1 + R, n_embd)
        for layer in self.layers:
            far = col > layer.dilation  # the left input is a character of the same name, not padding
            h = layer.forward_packed(h, far.nonzero().squeeze(1), (~far).nonzero().squeeze(1))  # (1 + R, n_hidden)
        logits = self.lm_head(h)[rows[valid]]  # (N, vocab), one row per valid position
        if targets is None:
            return logits.view(B, n_out, -1), None
        loss = F.cross_entropy(logits, targets[valid])
        return logits.new_zeros(B, n_out, logits.shape[-1]).masked_scatter(valid[..., None], logits), loss

    @staticmethod
    def _valid_positions(targets: torch.Tensor | None, idx: torch.Tensor, n_out: int) -> torch.Tensor:
        if targets is None:
            return torch.ones(idx.shape[0], n_out, dtype=torch.bool, device=idx.device)
        valid = targets != -1
        lengths = valid.sum(1, keepdim=True)
        if not torch.equal(valid, torch.arange(n_out, device=valid.device) < lengths):
            raise ValueError("targets must be -1 only after each name (right padding)")
        return valid

    @torch.no_grad()
    def init_cache(self, batch_size: int) -> "GenerationCache":
        """Fast WaveNet generation (arXiv:1611.09482): each layer keeps the last `dilation` inputs it
        has seen, so one new character costs one node per layer instead of a whole tree.

        Every queue starts filled with the value its layer's input has on the all-'.' padding. The
        cache also holds each layer's kernel as one contiguous (2 * n_in, n_out) matrix, so a step
        does not re-lay the Conv1d weight out: generate with the weights the cache was made with.
        """
        h = self.wte.weight[0].expand(batch_size, -1)  # (B, n_embd): the '.' token
        queues, kernels = [], []
        for layer in self.layers:
            queues.append(h[:, None].expand(-1, layer.dilation, -1).clone())  # (B, dilation, n_in)
            kernels.append(rearrange(layer.conv.weight, "h c k -> (k c) h").contiguous())  # [W0 | W1]^T
            h = layer(h, h)  # the node over all-'.' input, one level up
        return GenerationCache(queues, kernels)

    @torch.no_grad()
    def step(self, cache: "GenerationCache", token: torch.Tensor) -> torch.Tensor:
        """Feed one character per row, token (B,); returns the logits (B, vocab) for the next one.
        Updates `cache` in place. Needs eval mode: BatchNorm's running statistics, not a batch's."""
        h = self.wte(token)  # (B, n_embd)
        for layer, queue, kernel in zip(self.layers, cache.queues, cache.kernels, strict=True):
            slot = cache.t % layer.dilation  # a ring buffer: this slot holds the input `dilation` steps back
            pair = torch.cat([queue[:, slot], h], dim=1)  # (B, 2 * n_in): [x[t - dilation], x[t]]
            queue[:, slot] = h
            h = layer.activate(pair @ kernel)  # (B, n_hidden)
        cache.t += 1
        return self.lm_head(h)

    def _forward_full(self, idx: torch.Tensor) -> torch.Tensor:
        """A plain valid dilated convolution over every column: each layer shortens T by its dilation."""
        h = self.wte(idx)  # (B, T, n_embd)
        for layer in self.layers:
            h = layer(h[:, : -layer.dilation], h[:, layer.dilation :])  # (B, T - dilation, n_hidden)
        return self.lm_head(h)  # (B, T - block_size + 1, vocab)

    @classmethod
    def from_hierarchical(cls, tree: HierarchicalMLP) -> "ConvWaveNet":
        """A convolutional model that computes the same function as `tree`."""
        if isinstance(tree.tree[0][2], BatchDimOnlyBatchNorm):
            raise ValueError("a tree with the lecture's batch-norm bug has per-position statistics: no conv equivalent")
        model = _empty_like(cls, tree)
        with torch.no_grad():
            for layer, node in zip(model.layers, tree.tree, strict=True):
                layer.conv.weight.copy_(rearrange(node[1].weight, "h (k c) -> h c k", k=2))
                layer.norm.load_state_dict(node[2].state_dict())
        return model


@dataclass
class GenerationCache:
    """ConvWaveNet's generation state: per layer a ring buffer of its last inputs, and its kernel."""

    queues: list[torch.Tensor]  # per layer (B, dilation, n_in)
    kernels: list[torch.Tensor]  # per layer (2 * n_in, n_out)
    t: int = 0  # characters fed so far


def _empty_like(cls, src: nn.Module) -> nn.Module:
    """A `cls` of the same sizes, dtype, device and mode as `src`, sharing its embedding and head weights."""
    vocab_size, n_embd = src.wte.weight.shape
    n_hidden, n_layers = src.lm_head.in_features, len(src.tree if hasattr(src, "tree") else src.layers)
    model = cls(vocab_size, n_embd, n_hidden, n_layers).to(src.wte.weight)
    with torch.no_grad():
        model.wte.weight.copy_(src.wte.weight)
        model.lm_head.load_state_dict(src.lm_head.state_dict())
    return model.train(src.training)


MODELS = {"conv": ConvWaveNet, "hierarchical": HierarchicalMLP, "flat": FlatMLP}
