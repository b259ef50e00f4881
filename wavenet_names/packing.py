"""How a batch of whole names lies in ConvWaveNet's packed rows: the layout a forward pass is run on.

A batch idx (B, T) holds each name after block_size '.' tokens, right-padded. Packed, it is one
sequence of rows (rows, C):

    rows 0 .. S-1   the start rows: the nodes over the '.' padding. Every name's nodes there are
                    the same, so one row serves them all (S = 1); with labels they depend on the
                    name's label, so each name has its own (S = B)
    rows S ..       the characters of every name, name after name: a row's left input inside its
                    own name is exactly `dilation` rows back

A layout holds what the layers need to know about those rows (which are starts, which reach back
into their own name per dilation, which count in BatchNorm), applies a layer's kernel to them
(kernel.taps, in parts), and gives the way back from the packed logits to the positions of
(B, n_out) and their loss. The caller chooses the layout (ConvWaveNet.forward's `rows`); it comes in
two kinds, for two costs:

- ExactLayout: the rows that hold a node and no more, found with one read of the device. A layer
  computes the left half of its kernel only for the rows that reach into their own name, through a
  gather and a scatter: the fewest multiply-adds, what a CPU wants.
- FixedLayout: the same rows in a bucket of `rows` given in advance (counted on the CPU by the
  data), the extra rows holding nothing. No shape depends on the data and the host never waits for
  the device: what a compiled step, or one captured as CUDA graphs, needs. A layer computes the left
  half for every row and shifts and selects it, all elementwise.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .kernel import taps
from .losses import cross_entropy_sum, widened


@dataclass
class PackedLayout:
    """What both layouts hold: the packed rows' inputs, which rows are starts, and their targets."""

    tokens: torch.Tensor  # (rows,) each row's input character: '.' for the start rows
    starts: int  # the start rows: 1 shared, or one per name (labelled)
    start_of: torch.Tensor | None  # (rows,) each row's name's start row; None when the start is shared
    far: dict[int, torch.Tensor]  # per dilation that some name reaches: its rows whose left input is in their name
    first: torch.Tensor | None  # (B,) every name's first target, which its start row predicts; None: no targets
    rest: torch.Tensor | None  # (rows - starts,) the targets of the rows after the start rows
    at: torch.Tensor | None  # (B, n_out) each position's packed row; None for a fixed layout, which has no logits
    valid: torch.Tensor | None  # (B, n_out) bool, the positions with a target; None: no targets
    counted: torch.Tensor | None = None  # (rows,) bool, the rows that enter BatchNorm's statistics; None: all

    @property
    def shared(self) -> bool:
        """Row 0 is a node every name shares (and, in distributed training, every rank computes)."""
        return self.start_of is None

    def padding(
        self, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, condition: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """W0 h over the padding, as every row's left input were there: (n_conv,) once when every name
        shares row 0, else (rows, n_conv), each row its name's; and the bias that W1 h of every row adds
        to it: that, the condition V h of its start row (condition (S, n_conv), or None) and b."""
        if self.shared:
            padding = taps(weight, back=h[:1]).squeeze(0)  # (n_conv,)
            per_row = padding
        else:
            per_start = taps(weight, back=h[: self.starts])  # (S, n_conv)
            padding = per_start.index_select(0, self.start_of)  # (rows, n_conv)
            per_row = padding if condition is None else (per_start + condition).index_select(0, self.start_of)
        return padding, per_row if bias is None else per_row + bias

    def loss(self, packed: torch.Tensor) -> torch.Tensor | None:
        """The mean cross-entropy over the positions with a target, from the packed logits (rows, vocab).

        With one shared start row, its B predictions are one distribution, so they cost one
        log_softmax weighted by how many names start with each character. The loss does not go
        through the (B, n_out) logits, whose backward would sum B gradients into row 0 through one
        index (a sort-based kernel that serialises on it, most of a large batch's step on a GPU)."""
        if self.first is None:
            return None
        first, rest = self.first, self.rest  # -1: a row with no name, or no target
        if not self.shared:  # a start row per name: name b's first target is row b's
            total = cross_entropy_sum(packed[: self.starts], first) + cross_entropy_sum(packed[self.starts :], rest)
            return total / ((first >= 0).sum() + (rest >= 0).sum())
        vocab = packed.shape[1]
        firsts = (first[:, None] == torch.arange(vocab, device=first.device)).sum(0)  # (vocab,); -1 counts nowhere
        first_total = -(firsts * widened(packed[0]).log_softmax(-1)).sum()
        return (cross_entropy_sum(packed[1:], rest) + first_total) / ((rest >= 0).sum() + firsts.sum())


@dataclass
class ExactLayout(PackedLayout):
    """The packed rows of a batch, every row a node. See the module's docstring."""

    @classmethod
    def of(
        cls, idx: torch.Tensor, targets: torch.Tensor | None, block_size: int, dilations: list[int], labelled: bool
    ) -> "ExactLayout":
        """The layout of idx (B, T), with targets (B, n_out) or None, for layers of these dilations
        (those that reach into some name)."""
        B, n_out = idx.shape[0], idx.shape[1] - block_size + 1
        valid = targets != -1 if targets is not None else idx.new_ones(B, n_out, dtype=torch.bool)
        n_real, n_far = _facts(idx, valid, block_size, dilations)
        starts = B if labelled else 1
        name, j = true_indices(valid[:, 1:], n_real).unbind(1)  # (n_real,) each: the rows after the starts
        col = F.pad(j + 1, (starts, 0))  # (rows,): each row's output column in its name (0: the start rows)
        # (B, n_out - 1): the packed row of each position after the first, counted in the packed order
        real = valid[:, 1:]
        at = real.flatten().cumsum(0).view_as(real) * real  # 1, 2, ... at the real positions
        if labelled:  # column 0 is the name's own start row
            at = torch.cat([torch.arange(B, device=idx.device)[:, None], (at + starts - 1) * real], dim=1)
        else:
            at = F.pad(at, (1, 0))
        return cls(
            tokens=_tokens(idx, block_size, name, j, starts),
            starts=starts,
            start_of=_start_of(name, B) if labelled else None,
            far={d: true_indices(col > d, n).squeeze(1) for d, n in zip(dilations, n_far, strict=True)},
            first=None if targets is None else targets[:, 0],
            rest=None if targets is None else targets[:, 1:][name, j],
            at=at,
            valid=None if targets is None else valid,
        )

    def convolve(
        self,
        h: torch.Tensor,
        weight: torch.Tensor,
        dilation: int,
        bias: torch.Tensor | None = None,
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """A layer's pre-activation (rows, n_conv): W1 h[t] + W0 h[t - dilation] + b (+ V h), given h
        (rows, n_in), the layer's Conv1d weight (n_conv, n_in, 2) and bias, and its condition V h per
        start row, (S, n_conv) or None. Every row is first taken as if its left input lay in the
        padding, whose half of the kernel is computed once per start row; the rows that reach into
        their own name are then corrected, by linearity: + W0 h[t - dilation] - W0 h[start]."""
        padding, per_row = self.padding(h, weight, bias, condition)
        pre = taps(weight, now=h, bias=per_row)  # (rows, n_conv)
        far = self.far.get(dilation)
        if far is None:  # no name reaches that far
            return pre
        # index_select, not h[idx]: its backward is an index_add, where h[idx]'s is a sort-based
        # index_put (on a GPU, see loss)
        left = h.index_select(0, far - dilation)
        if self.shared:  # the subtraction is a bias
            correction = taps(weight, back=left, bias=-padding)
        else:
            correction = taps(weight, back=left) - padding.index_select(0, far)
        return pre.index_add_(0, far, correction)

    def logits(self, packed: torch.Tensor) -> torch.Tensor | None:
        """The packed logits (rows, vocab) at the batch's positions, (B, n_out, vocab), 0 where there
        is no target."""
        B, n_out = self.at.shape
        logits = packed.index_select(0, self.at.flatten()).view(B, n_out, -1)
        return logits if self.valid is None else logits.masked_fill(~self.valid[..., None], 0.0)


@dataclass
class FixedLayout(PackedLayout):
    """The packed rows of a batch in a bucket of a size given in advance. See the module's docstring."""

    @classmethod
    def of(
        cls,
        idx: torch.Tensor,
        targets: torch.Tensor | None,
        block_size: int,
        dilations: list[int],
        labelled: bool,
        rows: int,
    ) -> "FixedLayout":
        """The layout of idx (B, T) and targets (B, n_out) in `rows` packed rows: at least the start
        rows and the targets after each name's first (NameBatches.sample counts them on the CPU).
        The rows past the names get name = j = -1: they hold '.', and count nowhere."""
        if targets is None:
            raise ValueError("rows needs targets: they say which positions hold a name")
        B = idx.shape[0]
        starts = B if labelled else 1
        name, j = true_indices(targets[:, 1:] != -1, rows - starts).unbind(1)  # (rows - starts,) each
        col = F.pad(j + 1, (starts, 0))  # (rows,): as ExactLayout's, 0 for the empty rows too
        return cls(
            tokens=_tokens(idx, block_size, name, j, starts),
            starts=starts,
            start_of=_start_of(name, B) if labelled else None,
            far={d: col > d for d in dilations},  # (rows,) bool each: a mask, of fixed size
            first=targets[:, 0],
            rest=targets[:, 1:][name, j].masked_fill(name < 0, -1),
            at=None,
            valid=None,
            counted=F.pad(name >= 0, (starts, 0), value=True),
        )

    def convolve(
        self,
        h: torch.Tensor,
        weight: torch.Tensor,
        dilation: int,
        bias: torch.Tensor | None = None,
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """ExactLayout.convolve, with the left half computed for every row, shifted down `dilation`
        rows and selected where the row reaches into its name: no gather, no scatter."""
        padding, per_row = self.padding(h, weight, bias, condition)
        pre = taps(weight, now=h, bias=per_row)  # (rows, n_conv)
        far = self.far.get(dilation)
        if far is None:
            return pre
        shifted = F.pad(taps(weight, back=h), (0, 0, dilation, 0))[: len(h)]  # row t: W0 h[t - dilation]
        return pre + torch.where(far[:, None], shifted - padding, 0.0)

    def logits(self, packed: torch.Tensor) -> None:
        """A fixed-shape step needs only the loss."""
        return None


def bucket(n: int) -> int:
    """n rounded up to the next of 8 steps per power of two (8, 9, 10, ... 15, 16, 18, 20, ...): few
    sizes, each at most 1/8 larger than n, so that a step captured or compiled per size is made a few
    times, not once per batch."""
    if n <= 8:
        return 8
    granule = 1 << (n.bit_length() - 4)  # an eighth of the power of two at or below n
    return -(-n // granule) * granule


def packed_rows(lengths: torch.Tensor, labelled: bool = False) -> int:
    """How many rows ConvWaveNet packs names of these lengths (B,) into: the start rows, the nodes over
    the padding that every name's first position reads (one shared row, or one per name for a model
    with labels: the label changes them), then one per character. Counted on the CPU (lengths live there)."""
    return (len(lengths) if labelled else 1) + int(lengths.sum())


def _facts(idx: torch.Tensor, valid: torch.Tensor, block_size: int, dilations: list[int]):
    """What an exact layout needs to know from the device, in one read: how many positions have a
    real character as their last input (the rows after the start rows); and for each of `dilations`,
    how many of those lie more than that many characters into their name. It checks, in the same
    read, that idx is names after block_size '.' tokens and that targets are -1 only after each name."""
    n_out = valid.shape[1]
    right_padded = valid == (torch.arange(n_out, device=idx.device) < valid.sum(1, keepdim=True))
    real = valid[:, 1:]  # column j + 1 is more than d characters into its name where j >= d
    facts = [(idx[:, :block_size] == 0).all(), right_padded.all(), real.sum()]
    padded, well_formed, n_real, *n_far = torch.stack(facts + [real[:, d:].sum() for d in dilations]).tolist()
    if not padded:
        raise ValueError(
            f"idx must be names after {block_size} '.' tokens (data.pad_batch); forward_full takes any columns"
        )
    if not well_formed:
        raise ValueError("targets must be -1 only after each name (right padding)")
    return n_real, n_far


def _tokens(idx: torch.Tensor, block_size: int, name: torch.Tensor, j: torch.Tensor, starts: int) -> torch.Tensor:
    """(rows,): '.' for the start rows, then every character, name after name. j: the character's
    index in its name; idx[:, block_size + j] is the last input of output j + 1."""
    return F.pad(idx[:, block_size:][name, j], (starts, 0))


def _start_of(name: torch.Tensor, B: int) -> torch.Tensor:
    """(rows,): each row's name's start row, for a model with a start row per name."""
    return torch.cat([torch.arange(B, device=name.device), name.clamp(min=0)])


def true_indices(mask: torch.Tensor, size: int) -> torch.Tensor:
    """mask.nonzero(), (size, mask.ndim), given that at most `size` entries are True (the rows past
    them are -1): the host need not ask the device how many."""
    if mask.numel() == 0:  # (a batch of empty names) nonzero_static fails on an empty CUDA tensor before torch 2.9
        return mask.new_full((size, mask.ndim), -1, dtype=torch.long)
    return torch.nonzero_static(mask, size=size, fill_value=-1)
