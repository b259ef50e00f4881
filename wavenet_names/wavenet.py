"""ConvWaveNet: the lecture's tree as dilated causal convolutions slid over whole names (WaveNet,
arXiv:1609.03499), computing every tree node once per position instead of once per window; and, as
options, the rest of a WaveNet block: gated units, residual and skip connections, repeated dilation
cycles, dropout and a choice of normalisation; and global conditioning on labels (a name's sex and
decade), added to every layer's pre-activation.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .layers import BatchNorm, LabelEmbedding, init_lecture, label_vectors
from .losses import cross_entropy_sum, language_model_loss, widened
from .options import OptionError

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
    """One level of the tree as a causal convolution: out[t] = act(norm(W0 x[t - dilation] + W1 x[t])).

    W0 and W1 are the two taps of an nn.Conv1d(kernel_size=2) weight, which is the tree's Linear
    weight split in its left and right halves. We apply them as two matmuls rather than through
    Conv1d's kernel, which on a CPU is several times slower for this shape. Every way of feeding the
    layer (pairs of columns, packed names, one cached step) computes the pre-activation its own way,
    then calls finish().
    """

    def __init__(self, n_in: int, n_out: int, dilation: int, blocks: Blocks = Blocks(), residual: bool = False,
                 n_label: int = 0):  # fmt: skip
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

    def forward(self, left: torch.Tensor, right: torch.Tensor, condition: torch.Tensor | None = None):
        """left: the inputs `dilation` steps back (or one row that broadcasts), right: the current
        inputs, both (..., n_in); condition: V h (..., n_conv), broadcast to them, or None. Returns
        (out, skip) as finish() does."""
        w0, w1 = self.conv.weight.unbind(-1)  # (n_conv, n_in) each
        pre = F.linear(right, w1, self.conv.bias) + F.linear(left, w0)
        return self.finish(pre if condition is None else pre + condition, right)

    def forward_packed(self, h: torch.Tensor, far: torch.Tensor | None, counted: torch.Tensor | None = None,
                       start_of: torch.Tensor | None = None, labels: torch.Tensor | None = None):  # fmt: skip
        """h (N, n_in): row 0 the all-'.' node (a conditional model's start rows: see below), then the
        packed characters of a batch of names (then, in a fixed-shape step, rows that hold nothing).

        far: the rows more than `dilation` columns into their name, whose left input is the row
        `dilation` back in h; None when no name of the batch is that long. Every other row reaches
        into the padding, where the left input is the all-'.' node h[0]: that half of the kernel is
        computed once and shared. far comes in one of two forms, for two costs:
        - (F,) their indices: the left half of the kernel is computed for those rows alone, the
          fewest multiply-adds (a CPU's cost), through a gather and a scatter whose size is the data's;
        - (N,) bool, a mask: the left half is computed for every row, shifted down `dilation` rows and
          selected, all elementwise and of fixed size (what a compiled or captured step needs, and a
          GPU prefers: no gather, no scatter).
        counted (N,) bool: the rows that hold a node (None: all), the only ones BatchNorm's statistics see.

        A conditional model's label changes the node over the padding, so each name has a start row of
        its own, rows 0 to S - 1: labels (S, n_label) their label vectors h, start_of (N,) each row's
        name's start row; a row whose left input is in the padding reads its own name's.
        """
        w0, w1 = self.conv.weight.unbind(-1)  # (n_conv, n_in) each
        # every row as if its left input were the padding: that half of the kernel, computed once (per
        # start row), is the bias of the current inputs' matmul, so adding it costs no pass of its own
        if labels is None:
            padding = F.linear(h[:1], w0).squeeze(0)  # (n_conv,)
            bias = padding
        else:
            per_start = F.linear(h[: len(labels)], w0)  # (S, n_conv)
            padding = per_start.index_select(0, start_of)  # (N, n_conv)
            bias = (per_start + self.condition(labels)).index_select(0, start_of)  # (N, n_conv): and V h
        bias = bias if self.conv.bias is None else bias + self.conv.bias
        shared = labels is None  # row 0 is a node every name shares (and every rank computes)
        if far is not None and far.dtype == torch.bool:
            left, right = F.linear(h, torch.cat([w0, w1])).chunk(2, dim=-1)  # (N, n_conv) each
            shifted = F.pad(left, (0, 0, self.dilation, 0))[: len(left)]  # row t: W0 h[t - dilation]
            pre = right + torch.where(far[:, None], shifted - padding, 0.0) + bias  # (N, n_conv)
            return self.finish(pre, h, shared_first_row=shared, counted=counted)
        pre = F.linear(h, w1, bias)  # (N, n_conv)
        if far is not None:
            # the far rows corrected, by linearity: W0 h[t - dilation] - W0 h[start], the subtraction again a
            # bias when the start row is shared. index_select, not h[idx]: its backward is an index_add,
            # where h[idx]'s is a sort-based index_put (on a GPU, see _packed_loss)
            left = h.index_select(0, far - self.dilation)
            if shared:
                correction = F.linear(left, w0, -padding)
            else:
                correction = F.linear(left, w0) - padding.index_select(0, far)
            pre.index_add_(0, far, correction)  # (N, n_conv)
        return self.finish(pre, h, shared_first_row=shared, counted=counted)

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

    def __init__(self, vocab_size: int, n_embd: int, n_hidden: int, n_layers: int, blocks: Blocks = Blocks(),
                 label_sizes: tuple[int, ...] = (), label_dropout: float = 0.0):  # fmt: skip
        super().__init__()
        self.blocks = blocks
        self.block_size = receptive_field(n_layers, blocks.cycles)
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.labels = LabelEmbedding(label_sizes, n_embd, label_dropout) if label_sizes else None
        n_label = self.labels.dim if self.labels is not None else 0
        depth = n_layers * blocks.cycles
        self.layers = nn.ModuleList(
            DilatedLayer(n_embd if i == 0 else n_hidden, n_hidden, 2 ** (i % n_layers), blocks,
                         # a residual needs equal sizes; with skips, the last layer's output feeds nothing
                         residual=blocks.residual and i > 0 and not (blocks.skip and i == depth - 1), n_label=n_label)
            for i in range(depth)
        )  # fmt: skip
        self.lm_head = nn.Linear(n_hidden, vocab_size)
        init_lecture(self)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, rows: int | None = None,
                labels: torch.Tensor | None = None):  # fmt: skip
        """idx (B, T), targets (B, T - block_size + 1) or None; returns (logits, loss) as the class
        docstring says. labels (B, K): each name's, for a conditional model (None: all unknown).

        rows: how many packed rows to lay the batch out in, at least the start rows (1, or B with labels)
        and the number of targets after each name's first (the data knows it, see NameBatches.sample),
        for a training step whose every shape is fixed in advance: with B, T and rows given, no shape
        inside depends on the data, and the host never waits for the device. Rows past the names hold
        nothing, and count in neither the BatchNorm statistics nor the loss. Such a step needs only the
        loss, so logits is None.
        """
        B, T = idx.shape
        n_out = T - self.block_size + 1
        if n_out < 1:
            raise ValueError(f"idx needs at least block_size={self.block_size} columns, got {T}")
        if targets is not None and targets.shape != (B, n_out):
            raise ValueError(f"targets must be (B, T - block_size + 1) = {(B, n_out)}, got {tuple(targets.shape)}")
        h_labels = label_vectors(self.labels, labels, B, idx.device)  # (B, n_label), or None
        starts = 1 if h_labels is None else B  # the start rows: one shared, or one per name (its label's)
        # per dilation that reaches some name (one below its last output column, n_out - 1: a shape), how
        # many rows have their left input inside their own name, not in the padding
        dilations = sorted({layer.dilation for layer in self.layers if layer.dilation < n_out - 1})
        fixed = rows is not None
        if not fixed:
            padded, valid, n_real, n_far = self._layout(idx, targets, n_out, dilations)  # valid: (B, n_out) bool
            if not padded:
                logits = self._forward_full(idx, h_labels)
                return logits, language_model_loss(logits, targets)
            rows = starts + n_real
        elif targets is None:
            raise ValueError("rows needs targets: they say which positions hold a name")
        else:
            valid = targets != -1
        real = valid[:, 1:]  # (B, n_out - 1): the positions whose last input is a real character
        # The packed order: name by name, character by character. j: the character's index in its name,
        # idx[:, block_size + j] is the last input of output j + 1. The number of rows came with the
        # layout (or the call), so no index below makes the host wait for the device, and what follows
        # is one sequence of operations (one graph for torch.compile) whatever the depth. Rows past the
        # names get name = j = -1.
        name, j = _true_indices(real, rows - starts).unbind(1)  # (rows - starts,) each
        tokens = F.pad(idx[:, self.block_size :][name, j], (starts, 0))  # (rows,): '.', then every character
        col = F.pad(j + 1, (starts, 0))  # (rows,): each row's output column in its name (0: start and empty rows)
        # (rows,): each row's name's start row, for a conditional model
        start_of = None if h_labels is None else torch.cat([torch.arange(B, device=idx.device), name.clamp(min=0)])
        # per dilation, the rows whose left input is in the same name (None: no name reaches that far): a
        # fixed-shape step marks them in a mask, any other lists them, to compute no more than needed
        if fixed:
            far = {d: col > d for d in dilations}  # (rows,) bool each
        else:
            far = {d: _true_indices(col > d, n).squeeze(1) for d, n in zip(dilations, n_far, strict=True)}
        counted = F.pad(name >= 0, (starts, 0), value=True) if fixed else None  # (rows,): the rows that hold a node
        h, skips = self.wte(tokens), []  # (rows, n_embd)
        for layer in self.layers:
            h, skip = layer.forward_packed(h, far.get(layer.dilation), counted, start_of, h_labels)
            skips.append(skip)  # h: (rows, n_hidden)
        packed = self._head(h, skips)  # (rows, vocab): the start rows for every name's first position
        if fixed:  # the empty rows predict nothing
            rest = targets[:, 1:][name, j].masked_fill(name < 0, -1)
            return None, self._packed_loss(packed, targets[:, 0], rest, starts)
        # (B, n_out): each position's packed row, the real positions counted in that same order; column 0
        # is the name's start row
        at = real.flatten().cumsum(0).view_as(real) * real  # (B, n_out - 1): 1, 2, ... at real positions
        if starts == 1:
            at = F.pad(at, (1, 0))
        else:
            at = torch.cat([torch.arange(B, device=idx.device)[:, None], (at + starts - 1) * real], dim=1)
        logits = packed.index_select(0, at.flatten()).view(B, n_out, -1)  # (B, n_out, vocab)
        if targets is None:
            return logits, None
        loss = self._packed_loss(packed, targets[:, 0], targets[:, 1:][name, j], starts)
        return logits.masked_fill(~valid[..., None], 0.0), loss

    @staticmethod
    def _packed_loss(packed: torch.Tensor, first: torch.Tensor, rest: torch.Tensor, starts: int = 1) -> torch.Tensor:
        """The mean cross-entropy over the valid positions, from the packed rows (starts + R, vocab):
        first (B,) every name's first target (-1 for a row with no name), predicted by the start rows;
        rest (R,) the targets of the rows after them (-1 for a row that holds nothing).

        With one start row (no labels), row 0's B predictions are one distribution, so they cost one
        log_softmax weighted by how many names start with each character. The loss does not go through
        the (B, n_out) logits, whose backward would sum B gradients into row 0 through one index (a
        sort-based kernel that serialises on it, most of a large batch's step on a GPU)."""
        if starts > 1:  # a start row per name: name b's first target is row b's
            total = cross_entropy_sum(packed[:starts], first) + cross_entropy_sum(packed[starts:], rest)
            return total / ((first >= 0).sum() + (rest >= 0).sum())
        vocab = packed.shape[1]
        firsts = (first[:, None] == torch.arange(vocab, device=first.device)).sum(0)  # (vocab,); -1 counts nowhere
        first_total = -(firsts * widened(packed[0]).log_softmax(-1)).sum()
        return (cross_entropy_sum(packed[1:], rest) + first_total) / ((rest >= 0).sum() + firsts.sum())

    def _head(self, h: torch.Tensor, skips: list) -> torch.Tensor:
        """The logits from the last layer's output, or from the sum of the skip connections."""
        return self.lm_head(F.relu(sum(skips)) if self.blocks.skip else h)

    def _layout(self, idx: torch.Tensor, targets: torch.Tensor | None, n_out: int, dilations: list[int]):
        """What the packing needs to know from the device, in one read. Returns whether idx starts with
        block_size '.' tokens (the packed layout); where targets are valid, (B, n_out) bool; how many
        positions have a real character as their last input (the packed rows after row 0); and for
        each of `dilations`, how many of those lie more than that many characters into their name. In
        the packed layout, targets must be -1 only after each name."""
        valid = targets != -1 if targets is not None else idx.new_ones(idx.shape[0], n_out, dtype=torch.bool)
        right_padded = valid == (torch.arange(n_out, device=idx.device) < valid.sum(1, keepdim=True))
        real = valid[:, 1:]  # column j + 1 is more than d characters into its name where j >= d
        facts = [(idx[:, : self.block_size] == 0).all(), right_padded.all(), real.sum()]
        padded, well_formed, n_real, *n_far = torch.stack(facts + [real[:, d:].sum() for d in dilations]).tolist()
        if padded and not well_formed:
            raise ValueError("targets must be -1 only after each name (right padding)")
        return padded, valid, n_real, n_far

    def _forward_full(self, idx: torch.Tensor, h_labels: torch.Tensor | None = None) -> torch.Tensor:
        """A plain valid dilated convolution over every column: each layer shortens T by its dilation.
        h_labels (B, n_label): the names' label vectors, for a conditional model."""
        h, skips = self.wte(idx), []  # (B, T, n_embd)
        for layer in self.layers:
            condition = None if h_labels is None else layer.condition(h_labels)[:, None]  # (B, 1, n_conv)
            h, skip = layer(h[:, : -layer.dilation], h[:, layer.dilation :], condition)  # (B, T - dilation, n_hidden)
            skips.append(skip)
        n_out = h.shape[1]  # T - block_size + 1: earlier layers' skips are longer, keep their last columns
        return self._head(h, [s[:, -n_out:] for s in skips] if self.blocks.skip else skips)

    @torch.no_grad()
    def init_cache(self, batch_size: int, labels: torch.Tensor | None = None) -> "GenerationCache":
        """Fast WaveNet generation (arXiv:1611.09482): each layer keeps the last `dilation` inputs it
        has seen, so one new character costs one node per layer instead of a whole tree.

        Every queue starts filled with the value its layer's input has on the all-'.' padding. The
        cache also holds each layer's kernel as one contiguous (2 * n_in, n_conv) matrix, so a step
        does not re-lay the Conv1d weight out: generate with the weights the cache was made with.
        labels (B, K): each name's, for a conditional model (None: all unknown); the cache keeps each
        layer's V h.
        """
        h = self.wte.weight[0].expand(batch_size, -1)  # (B, n_embd): the '.' token
        h_labels = label_vectors(self.labels, labels, batch_size, h.device)  # (B, n_label), or None
        queues, kernels, conditions = [], [], []
        for layer in self.layers:
            queues.append(h[:, None].expand(-1, layer.dilation, -1).clone())  # (B, dilation, n_in)
            kernels.append(rearrange(layer.conv.weight, "h c k -> (k c) h").contiguous())  # [W0 | W1]^T
            conditions.append(None if h_labels is None else layer.condition(h_labels))  # (B, n_conv)
            h, _ = layer(h, h, conditions[-1])  # the node over all-'.' input, one level up
        return GenerationCache(queues, kernels, conditions)

    @torch.no_grad()
    def step(self, cache: "GenerationCache", token: torch.Tensor) -> torch.Tensor:
        """Feed one character per row, token (B,); returns the logits (B, vocab) for the next one.
        Updates `cache` in place. Needs eval mode: BatchNorm's running statistics, not a batch's."""
        h, skips = self.wte(token), []  # (B, n_embd)
        for layer, queue, kernel, condition in zip(self.layers, cache.queues, cache.kernels, cache.conditions,
                                                   strict=True):  # fmt: skip
            slot = cache.t % layer.dilation  # a ring buffer: this slot holds the input `dilation` steps back
            pair = torch.cat([queue[:, slot], h], dim=1)  # (B, 2 * n_in): [x[t - dilation], x[t]]
            queue[:, slot] = h
            pre = pair @ kernel if layer.conv.bias is None else torch.addmm(layer.conv.bias, pair, kernel)
            if condition is not None:
                pre = pre + condition
            h, skip = layer.finish(pre, h)  # (B, n_hidden)
            skips.append(skip)
        cache.t += 1
        return self._head(h, skips)


def _true_indices(mask: torch.Tensor, size: int) -> torch.Tensor:
    """mask.nonzero(), (size, mask.ndim), given that at most `size` entries are True (the rows past
    them are -1): the host need not ask the device how many."""
    if mask.numel() == 0:  # (a batch of empty names) nonzero_static fails on an empty CUDA tensor before torch 2.9
        return mask.new_full((size, mask.ndim), -1, dtype=torch.long)
    return torch.nonzero_static(mask, size=size, fill_value=-1)


@dataclass
class GenerationCache:
    """ConvWaveNet's generation state: per layer a ring buffer of its last inputs, and its kernel."""

    queues: list[torch.Tensor]  # per layer (B, dilation, n_in)
    kernels: list[torch.Tensor]  # per layer (2 * n_in, n_conv)
    conditions: list  # per layer V h (B, n_conv) of a conditional model, else None
    t: int = 0  # characters fed so far
