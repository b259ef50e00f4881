"""ConvWaveNet: the lecture's tree as dilated causal convolutions slid over whole names (WaveNet,
arXiv:1609.03499), computing every tree node once per position instead of once per window; and, as
options, the rest of a WaveNet block: gated units, residual and skip connections, repeated dilation
cycles, dropout and a choice of normalisation; and global conditioning on labels (a name's sex and
decade), added to every layer's pre-activation.
"""

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .batches import NameBatches
from .kernel import stacked_taps, taps
from .kinds import CharacterRows, Kind
from .layers import BatchNorm, LabelEmbedding, init_lecture, label_vectors
from .options import OptionError, check_at_least, check_choices, check_fraction, option
from .packing import ExactLayout, FixedLayout, PackedLayout
from .splits import Facts

NORMS = ("batch", "layer", "none")


@dataclass(frozen=True)
class Blocks:
    """What turns the lecture's tree into full WaveNet blocks. The defaults are the lecture's tree,
    the one configuration that computes the same function as HierarchicalMLP."""

    gated: bool = False  # tanh(W_f * x) * sigmoid(W_g * x) instead of tanh(W * x)
    residual: bool = False  # every layer but the first adds a 1x1 projection of its output to its input
    skip: bool = False  # the head reads relu(sum of every layer's 1x1 skip projection), not the last layer
    cycles: int = 1  # the dilations 1, 2, ..., 2**(n_layers - 1), this many times over
    dropout: float = 0.0  # on each layer's activation, in training
    norm: str = "batch"  # batch: the lecture's BatchNorm; layer: LayerNorm; none

    def __post_init__(self):
        if self.cycles < 1:
            raise OptionError("cycles", f"must be at least 1, got {self.cycles}")
        if not 0.0 <= self.dropout < 1.0:
            raise OptionError("dropout", f"must be in [0, 1), got {self.dropout}")
        if self.norm not in NORMS:
            raise OptionError("norm", f"must be one of {', '.join(NORMS)}, got {self.norm!r}")

    @property
    def lecture(self) -> bool:
        return self == Blocks()


def receptive_field(n_layers: int, cycles: int = 1) -> int:
    """How many characters a stack of dilations 1, 2, ..., 2**(n_layers - 1), repeated `cycles` times,
    sees: each layer of dilation d adds d, so 2**n_layers for the lecture's single cycle."""
    return cycles * (2**n_layers - 1) + 1


class DilatedLayer(nn.Module):
    """One level of the tree as a causal convolution: out[t] = act(norm(W1 x[t] + W0 x[t - dilation])).

    W0 and W1 are the two taps of an nn.Conv1d(kernel_size=2) weight, which is the tree's Linear
    weight split in its left and right halves; kernel.taps applies them. Every way of feeding the
    layer (pairs of columns, packed names, one cached step) gets its pre-activation from taps, then
    calls finish().
    """

    def __init__(
        self, n_in: int, n_out: int, dilation: int, blocks: Blocks = Blocks(), residual: bool = False, n_label: int = 0
    ):
        super().__init__()
        self.dilation = dilation
        n_conv = 2 * n_out if blocks.gated else n_out  # a gated unit has filter and gate channels
        # the lecture's Linear has no bias, BatchNorm's beta does its work; so does LayerNorm's
        self.conv = nn.Conv1d(n_in, n_conv, kernel_size=2, dilation=dilation, bias=blocks.norm == "none")
        self.norm = {"batch": BatchNorm, "layer": nn.LayerNorm, "none": lambda n: nn.Identity()}[blocks.norm](n_conv)
        self.gated = blocks.gated
        self.dropout = nn.Dropout(blocks.dropout) if blocks.dropout > 0 else None
        self.residual = nn.Linear(n_out, n_out) if residual else None
        self.skip = nn.Linear(n_out, n_out) if blocks.skip else None
        # WaveNet's V: the label vector's part in the pre-activation, filter and gate (n_label: its size)
        self.condition = nn.Linear(n_label, n_conv, bias=False) if n_label else None

    def forward(self, now: torch.Tensor, back: torch.Tensor, condition: torch.Tensor | None = None, weight=None):
        """now: the current inputs, back: the inputs `dilation` steps back, both (..., n_in);
        condition: V h (..., n_conv), broadcast to them, or None;
        weight: the conv's weight, or as stacked_weight() lays it out. Returns (out, skip) as finish()
        does."""
        pre = taps(self.conv.weight if weight is None else weight, now, back, self.conv.bias)  # (..., n_conv)
        return self.finish(pre if condition is None else pre + condition, now)

    def stacked_weight(self) -> torch.Tensor:
        """The conv's weight as taps() multiplies a pair of inputs by it, (2 n_in, n_conv) (see
        kernel.stacked_taps), for generation: made again only when the weight has changed since (an
        optimizer step, a load, a move to another device or dtype)."""
        weight = self.conv.weight
        made_of = (weight.data_ptr(), weight._version, weight.dtype)
        if getattr(self, "_stacked_from", None) != made_of:
            self._stacked, self._stacked_from = stacked_taps(weight.detach()), made_of
        return self._stacked

    def forward_packed(self, h: torch.Tensor, layout: PackedLayout, h_labels: torch.Tensor | None = None):
        """h (rows, n_in): a batch of names in the packed rows of `layout` (see packing.py), whose
        start rows hold the nodes over the padding; h_labels (S, n_label): a conditional model's label
        vectors, one per start row. Returns (out, skip) as finish() does."""
        condition = None if h_labels is None else self.condition(h_labels)  # (S, n_conv): V h per start row
        pre = layout.convolve(h, self.conv.weight, self.dilation, self.conv.bias, condition)  # (rows, n_conv)
        return self.finish(pre, h, shared_first_row=layout.shared, counted=layout.counted)

    def finish(self, pre: torch.Tensor, x: torch.Tensor, shared_first_row: bool = False, counted=None):
        """pre (..., n_conv): the convolution's output; x (..., n_in): the layer's current input;
        shared_first_row and counted as BatchNorm takes them. Returns (out (..., n_out), skip (..., n_out)
        or None)."""
        if isinstance(self.norm, BatchNorm):
            pre = self.norm(pre, shared_first_row, counted)  # row 0 is the shared all-'.' node (distributed)
        else:
            pre = self.norm(pre)
        if self.gated:
            f, g = pre.chunk(2, dim=-1)
            z = torch.tanh(f) * torch.sigmoid(g)  # (..., n_out)
        else:
            z = torch.tanh(pre)
        if self.dropout is not None:
            z = self.dropout(z)
        out = x + self.residual(z) if self.residual is not None else z
        return out, self.skip(z) if self.skip is not None else None


class ConvWaveNet(nn.Module):
    """The lecture's tree as n_layers causal convolutions of kernel 2 and dilations 1, 2, 4, ...

    idx (B, T): each row is block_size '.' tokens, then a name, right-padded. Output j predicts the
    character after idx[:, j : j + block_size], so logits are (B, T - block_size + 1, vocab), and
    targets, of the same shape, are -1 at padding. block_size is the receptive field, 2**n_layers
    for the lecture's tree, cycles * (2**n_layers - 1) + 1 in general.

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
    A batch of names thus costs at most one node evaluation per layer and predicted character
    (fewer: a left input in the padding is the shared row, whose half of the kernel is computed
    once), against 2**n_layers - 1 for HierarchicalMLP. When idx does not start with block_size '.'
    tokens (e.g. the lecture's windows themselves) the model runs as a plain valid convolution over
    every column.

    In training mode the BatchNorm statistics are those of the nodes computed: every distinct node
    once, the all-'.' nodes included, while HierarchicalMLP recomputes a node for every window that
    contains it and counts it that many times. So the two models compute the same function in eval
    mode, where both use the running estimates, and not in training mode.

    Global conditioning (label_sizes: each label column's number of values, unknown included): the
    labels (B, K) of each name are embedded as one vector h (LabelEmbedding, n_embd per column), and
    every layer adds V h to its pre-activation. The nodes over the padding then depend on the label, so
    each name gets a start row of its own in place of the shared row 0.
    """

    def __init__(
        self,
        vocab_size: int,
        n_embd: int,
        n_hidden: int,
        n_layers: int,
        blocks: Blocks = Blocks(),
        label_sizes: tuple[int, ...] = (),
        label_dropout: float = 0.0,
    ):
        super().__init__()
        self.blocks = blocks
        self.block_size = receptive_field(n_layers, blocks.cycles)
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.labels = LabelEmbedding(label_sizes, n_embd, label_dropout) if label_sizes else None
        n_label = self.labels.dim if self.labels is not None else 0
        depth = n_layers * blocks.cycles
        self.layers = nn.ModuleList(
            DilatedLayer(
                n_embd if i == 0 else n_hidden,
                n_hidden,
                2 ** (i % n_layers),
                blocks,
                # a residual needs equal sizes; with skips, the last layer's output feeds nothing
                residual=blocks.residual and i > 0 and not (blocks.skip and i == depth - 1),
                n_label=n_label,
            )
            for i in range(depth)
        )
        self.lm_head = nn.Linear(n_hidden, vocab_size)
        init_lecture(self)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        rows: int | None = None,
    ):
        """idx (B, T): whole names, each after block_size '.' tokens and right-padded (data.pad_batch);
        targets (B, T - block_size + 1) or None. Returns (logits, loss) as the class docstring says.
        labels (B, K): each name's, for a conditional model (None: all unknown). For any other batch
        (the lecture's windows, say), forward_full.

        rows: lay the batch out in this many packed rows, a bucket counted on the CPU by the data
        (NameBatches.sample), for a training step whose every shape is fixed in advance (a
        FixedLayout, see packing.py); None, the exact rows (an ExactLayout). A fixed-shape step needs
        only the loss, so its logits are None.
        """
        B, T = idx.shape
        n_out = T - self.block_size + 1
        if n_out < 1:
            raise ValueError(f"idx needs at least block_size={self.block_size} columns, got {T}")
        if targets is not None and targets.shape != (B, n_out):
            raise ValueError(f"targets must be (B, T - block_size + 1) = {(B, n_out)}, got {tuple(targets.shape)}")
        h_labels = label_vectors(self.labels, labels, B, idx.device)  # (B, n_label), or None
        # the dilations that reach into some name: below its last output column, n_out - 1 (a shape)
        dilations = sorted({layer.dilation for layer in self.layers if layer.dilation < n_out - 1})
        if rows is None:
            packing = ExactLayout.of(idx, targets, self.block_size, dilations, labelled=h_labels is not None)
        else:
            packing = FixedLayout.of(idx, targets, self.block_size, dilations, h_labels is not None, rows)
        h, skips = self.wte(packing.tokens), []  # (rows, n_embd)
        for layer in self.layers:
            h, skip = layer.forward_packed(h, packing, h_labels)  # (rows, n_hidden)
            skips.append(skip)
        packed = self._head(h, skips)  # (rows, vocab): the start rows predict every name's first character
        return packing.logits(packed), packing.loss(packed)

    def forward_full(self, idx: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The plain valid dilated convolution over every column of idx (B, T), whatever it holds
        (names after their padding, or the lecture's windows): each layer shortens T by its dilation.
        Returns logits (B, T - block_size + 1, vocab): output j has read idx[:, j : j + block_size].
        labels (B, K): each row's, for a conditional model (None: all unknown). The reference that the
        packed forward is tested against, and the graph an export would run."""
        if idx.shape[1] < self.block_size:
            raise ValueError(f"idx needs at least block_size={self.block_size} columns, got {idx.shape[1]}")
        h_labels = label_vectors(self.labels, labels, idx.shape[0], idx.device)  # (B, n_label), or None
        h, skips = self.wte(idx), []  # (B, T, n_embd)
        for layer in self.layers:
            condition = None if h_labels is None else layer.condition(h_labels)[:, None]  # (B, 1, n_conv)
            h, skip = layer(h[:, layer.dilation :], h[:, : -layer.dilation], condition)  # (B, T - dilation, n_hidden)
            skips.append(skip)
        n_out = h.shape[1]  # T - block_size + 1: earlier layers' skips are longer, keep their last columns
        return self._head(h, [s[:, -n_out:] for s in skips] if self.blocks.skip else skips)

    def _head(self, h: torch.Tensor, skips: list) -> torch.Tensor:
        """The logits from the last layer's output, or from the sum of the skip connections."""
        return self.lm_head(F.relu(sum(skips)) if self.blocks.skip else h)

    @torch.no_grad()
    def init_state(self, batch_size: int, labels: torch.Tensor | None = None) -> "ConvState":
        """Fast WaveNet generation (arXiv:1611.09482): each layer keeps the last `dilation` inputs it
        has seen, so one new character costs one node per layer instead of a whole tree. The state of
        batch_size names before their first character: every queue filled with the value its layer's
        input has on the all-'.' padding. labels (B, K): each name's, for a conditional model (None:
        all unknown); the state keeps each layer's V h."""
        h = self.wte.weight[0].expand(batch_size, -1)  # (B, n_embd): the '.' token
        h_labels = label_vectors(self.labels, labels, batch_size, h.device)  # (B, n_label), or None
        queues, conditions = [], []
        for layer in self.layers:
            queues.append(h[:, None].expand(-1, layer.dilation, -1).clone())  # (B, dilation, n_in)
            if h_labels is not None:
                conditions.append(layer.condition(h_labels))  # (B, n_conv)
            # the node over all-'.' input, one level up
            h, _ = layer(h, h, conditions[-1] if conditions else None, layer.stacked_weight())
        return ConvState(torch.zeros((), dtype=torch.long), tuple(queues), tuple(conditions))

    @torch.no_grad()
    def step(self, token: torch.Tensor, state: "ConvState") -> tuple[torch.Tensor, "ConvState"]:
        """Feed one character per row, token (B,); returns the logits (B, vocab) for the next one, and
        the state after it. The queues are ring buffers, written in place: the state returned holds the
        same tensors, and the one given is spent. Needs eval mode: BatchNorm's running statistics."""
        h, skips = self.wte(token), []  # (B, n_embd)
        t = int(state.t)
        conditions = state.conditions or (None,) * len(self.layers)
        for layer, queue, condition in zip(self.layers, state.queues, conditions, strict=True):
            slot = t % layer.dilation  # this slot holds x[t - dilation], (B, n_in), until h takes its place
            pre = taps(layer.stacked_weight(), h, queue[:, slot], layer.conv.bias)  # (B, n_conv)
            queue[:, slot] = h
            h, skip = layer.finish(pre if condition is None else pre + condition, h)  # (B, n_hidden)
            skips.append(skip)
        return self._head(h, skips), state._replace(t=state.t + 1)

    def step_queued(
        self, token: torch.Tensor, queues: tuple[torch.Tensor, ...], labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """step() as a function of its state, with nothing written in place: the form an exported step
        graph takes (export.py). token (B,); queues: per layer its last `dilation` inputs, oldest first,
        (B, dilation, n_in); labels (B, K) or None. Returns the logits (B, vocab) and the queues after
        this character. From queues of zeros, block_size '.' tokens fill them exactly as init_state does
        (each layer's oldest input is then one of '.' padding), the last one's logits the first character's."""
        h_labels = label_vectors(self.labels, labels, token.shape[0], token.device)  # (B, n_label), or None
        h, skips, queued = self.wte(token), [], []  # (B, n_embd)
        for layer, queue in zip(self.layers, queues, strict=True):
            condition = None if h_labels is None else layer.condition(h_labels)  # (B, n_conv)
            queued.append(
                torch.cat([queue[:, 1:], h[:, None]], dim=1)
            )  # (B, dilation, n_in): h joins, the oldest leaves
            h, skip = layer(h, queue[:, 0], condition)  # (B, n_hidden)
            skips.append(skip)
        return self._head(h, skips), tuple(queued)

    def queue_shapes(self) -> list[tuple[int, int]]:
        """Each layer's queue in step_queued, (dilation, n_in), per name."""
        return [(layer.dilation, layer.conv.in_channels) for layer in self.layers]


class ConvState(NamedTuple):
    """ConvWaveNet's generation state, all tensors: the characters fed so far, t (a 0-dimensional
    long), and per layer a ring buffer of its last `dilation` inputs, (B, dilation, n_in), and for a
    conditional model its V h, (B, n_conv) (none without labels)."""

    t: torch.Tensor
    queues: tuple[torch.Tensor, ...]
    conditions: tuple[torch.Tensor, ...] = ()


@dataclass(frozen=True)
class ConvOptions:
    """The conv model's options. The defaults are the lecture's final tree (76,579 parameters on
    data/names.txt); the rest make its layers full WaveNet blocks (see Blocks)."""

    n_embd: int = option(24, "embedding size")
    n_hidden: int = option(128, "hidden units per layer")
    n_layers: int = option(3, "tree levels: a context of 2**n-layers characters")
    gated: bool = option(Blocks.gated, "tanh(W_f x) * sigmoid(W_g x) units")
    residual: bool = option(Blocks.residual, "residual 1x1 connections")
    skip: bool = option(Blocks.skip, "the head reads the sum of skip connections")
    cycles: int = option(Blocks.cycles, "repeat the dilations 1, 2, ... this many times")
    dropout: float = option(Blocks.dropout, "dropout on each layer's activation")
    norm: str = option(Blocks.norm, "normalisation", choices=NORMS)
    label_dropout: float = option(
        0.1,
        "with labels: the chance that training hides each label (as unknown), so "
        "that a model also predicts, and samples, with any label left out",
    )

    def __post_init__(self):
        check_choices(self)
        check_at_least(self, 1, "n_embd", "n_hidden", "n_layers")
        check_fraction(self, "label_dropout")
        self.blocks()  # its own checks

    def blocks(self) -> Blocks:
        return Blocks(self.gated, self.residual, self.skip, self.cycles, self.dropout, self.norm)


def build(options: ConvOptions, facts: Facts) -> ConvWaveNet:
    return ConvWaveNet(
        facts.vocab_size,
        options.n_embd,
        options.n_hidden,
        options.n_layers,
        options.blocks(),
        facts.label_sizes,
        options.label_dropout,
    )


KIND = Kind(
    name="conv",
    summary="the lecture's tree as dilated convolutions over whole names (the default)",
    model=ConvWaveNet,
    options=ConvOptions,
    build=build,
    batches=NameBatches,
    cached=True,
    fixed_shapes=True,
    conditional=True,
    character_rows=CharacterRows(),
    exports=True,
)
