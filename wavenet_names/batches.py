"""A split as the batches a model trains on and is evaluated on, in one of two views of the same
examples (data.py): whole names (NameBatches), for the models of whole names, every position of a
name in one pass; or the lecture's windows (WindowBatches), for the per-position models. A kind of
model names its view (Kind.batches).
"""

from collections.abc import Iterator
from typing import NamedTuple

import torch

from .data import encode_names, names_end_to_end, names_right_padded, pad_batch, windows
from .packing import bucket, packed_rows
from .words import Vocab


class Batch(NamedTuple):
    """A training batch, as NameBatches.sample or WindowBatches.sample draws it: what the model takes,
    and what the trainer needs to know about it without asking the device."""

    inputs: torch.Tensor
    targets: torch.Tensor
    positions: int  # the targets the loss averages over (this rank's share)
    weight: float  # world_size * positions / (the whole batch's positions): the share's part in the mean
    rows: int | None = None  # ConvWaveNet's packed rows in a fixed-shape batch (see NameBatches.sample)
    labels: torch.Tensor | None = None  # (B, K) each input's labels (see labels.py), for a conditional model
    soft: torch.Tensor | None = None  # a teacher's probabilities at the targets' positions, (..., vocab) (distill.py)


class Chunk(NamedTuple):
    """A part of a split for evaluation: inputs, targets and, for a conditional model, labels (B, K)."""

    inputs: torch.Tensor
    targets: torch.Tensor
    labels: torch.Tensor | None = None


class NameBatches:
    """A split as whole names, for the models of whole names (ConvWaveNet, the Transformer, the GRU):
    a batch is a set of names, every position trained.

    The names are kept end to end (see data.names_end_to_end), so a split costs memory in proportion
    to its characters whatever its longest item, and each batch is laid out only as wide as its own
    longest (or, with fixed shapes, as a bucket: see sample).
    """

    # an evaluation chunk of `size` names holds at most as many padded positions as `size` names of
    # this many would, so that a long item makes a chunk of fewer names, not a chunk too big to fit
    CHUNK_POSITIONS_PER_NAME = 32

    def __init__(
        self,
        words: list[str],
        vocab: Vocab,
        block_size: int,
        device: str | torch.device = "cpu",
        labels: torch.Tensor | None = None,
    ):
        """labels (N, K): each name's labels, for a conditional model (None: none)."""
        self.block_size = block_size
        self.labels = None if labels is None else labels.to(device)
        chars, starts, self.lengths_cpu = names_end_to_end(words, vocab)
        self.chars, self.starts, self.lengths = (t.to(device) for t in (chars, starts, self.lengths_cpu))
        self.n_examples = int(self.lengths_cpu.sum()) + len(words)  # every character and each end token
        self.longest = int(self.lengths_cpu.max()) if len(words) else 0
        self.soft = None  # (n_examples, vocab): a teacher's probabilities, name after name (distill.py)

    def __len__(self) -> int:
        """How many names a batch is drawn from: an epoch."""
        return len(self.lengths_cpu)

    def sample(
        self,
        batch_size: int,
        generator: torch.Generator,
        rank: int = 0,
        world_size: int = 1,
        fixed_shapes: bool = False,
    ) -> Batch:
        """A random batch of names; with several ranks, this rank's share of it, and what the trainer
        needs to know about it, counted on the CPU so that a GPU need not be asked (see Batch).

        fixed_shapes: lay the batch out in shapes from a few buckets, for a step that is compiled or
        captured once per shape: idx as wide as the longest name rounded up to a power of two (at most
        the split's longest), and rows, the packed rows ConvWaveNet lays the names out in, rounded up
        by bucket(); the model keeps the extra rows out of every statistic."""
        ix = torch.randint(0, len(self.lengths), (batch_size,), generator=generator)  # the same on every rank
        mine = ix.tensor_split(world_size)[rank]
        lengths = self.lengths_cpu[mine]
        positions = int(lengths.sum()) + len(mine)  # every character and each end token
        weight = world_size * positions / (int(self.lengths_cpu[ix].sum()) + len(ix))
        longest, rows = int(lengths.max()), None
        if fixed_shapes:
            longest = min(1 << (longest - 1).bit_length(), self.longest)
            rows = bucket(packed_rows(lengths, labelled=self.labels is not None))
        ix = to_device(mine, self.lengths.device)
        return Batch(*self._batch(ix, longest), positions, weight, rows, self._labels(ix), self._soft(ix, longest))

    def chunks(self, size: int):
        """Every name once, in batches for evaluation: shortest first, so that a batch is padded
        little, and at most `size` names or `size * CHUNK_POSITIONS_PER_NAME` padded positions."""
        order = torch.argsort(self.lengths_cpu, stable=True)
        lengths = self.lengths_cpu[order].tolist()
        for i, j in chunk_bounds(lengths, size, size * self.CHUNK_POSITIONS_PER_NAME):
            ix = to_device(order[i:j], self.lengths.device)
            yield Chunk(*self._batch(ix, lengths[j - 1]), self._labels(ix))  # the longest: the last

    @staticmethod
    def batch_of(words: list[str], vocab: Vocab, block_size: int, labels: torch.Tensor | None = None):
        """`words` as one batch, on the CPU: idx (B, T), targets (B, n) (see pad_batch), which word each
        target belongs to, (B, n), and the inputs' labels, (B, K) (None: none; labels are the words')."""
        idx, targets = pad_batch(*encode_names(words, vocab), block_size)
        return idx, targets, torch.arange(len(words))[:, None].expand_as(targets), labels

    def _labels(self, ix: torch.Tensor) -> torch.Tensor | None:
        return None if self.labels is None else self.labels[ix]

    def _soft(self, ix: torch.Tensor, longest: int) -> torch.Tensor | None:
        """The teacher's probabilities for the names ix (B,), (B, longest + 1, vocab) as their targets
        lie (pad_batch), 0 past each name's end token; None without a teacher."""
        if self.soft is None:
            return None
        lengths = self.lengths[ix]
        first = self.starts[ix] + ix  # a name's first position: every name before it adds its end token
        columns = torch.arange(longest + 1, device=ix.device)
        inside = columns <= lengths[:, None]  # (B, longest + 1): its characters and its end token
        at = (first[:, None] + columns).masked_fill(~inside, 0)
        return self.soft[at] * inside[..., None]

    def _batch(self, ix: torch.Tensor, longest: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The names ix (B,), on the device, each after block_size '.' tokens (see pad_batch)."""
        lengths = self.lengths[ix]
        return pad_batch(
            names_right_padded(self.chars, self.starts[ix], lengths, longest), lengths, self.block_size, longest
        )


def chunk_bounds(lengths: list[int], max_items: int, max_positions: int) -> Iterator[tuple[int, int]]:
    """Consecutive runs [i, j) of items of these lengths, in order, each of at most max_items items
    and, padded to its longest (+1: the end token), at most max_positions: a long item gets a run of
    fewer items, or of its own, instead of making its run too big to fit."""
    i = 0
    while i < len(lengths):
        j, longest = i + 1, lengths[i] + 1
        while j < len(lengths) and j - i < max_items and (j + 1 - i) * max(longest, lengths[j] + 1) <= max_positions:
            longest = max(longest, lengths[j] + 1)
            j += 1
        yield i, j
        i = j


class WindowBatches:
    """A split as the lecture's windows, for the per-position models: a batch is a set of windows."""

    def __init__(
        self,
        words: list[str],
        vocab: Vocab,
        block_size: int,
        device: str | torch.device = "cpu",
        labels: torch.Tensor | None = None,
    ):
        """labels (N, K): each word's labels, which every window of the word takes (None: none)."""
        self.X, self.Y = (t.to(device) for t in windows(words, vocab, block_size))
        # a word's labels (K,) for each of its windows
        self.labels = None if labels is None else labels.repeat_interleave(_windows_per_word(words), 0).to(device)
        self.n_examples = len(self.Y)
        self.soft = None  # (n_examples, vocab): a teacher's probabilities, window by window (distill.py)

    def __len__(self) -> int:
        """How many windows a batch is drawn from: an epoch."""
        return len(self.Y)

    def sample(
        self,
        batch_size: int,
        generator: torch.Generator,
        rank: int = 0,
        world_size: int = 1,
        fixed_shapes: bool = False,
    ) -> Batch:
        """A random batch of windows (this rank's share of it), its positions and weight (see
        NameBatches). Its shapes are always fixed: (B, block_size) and (B,)."""
        ix = torch.randint(0, len(self.Y), (batch_size,), generator=generator)
        mine = to_device(ix.tensor_split(world_size)[rank], self.Y.device)
        labels = None if self.labels is None else self.labels[mine]
        soft = None if self.soft is None else self.soft[mine]
        weight = world_size * len(mine) / batch_size
        return Batch(self.X[mine], self.Y[mine], len(mine), weight, labels=labels, soft=soft)

    def chunks(self, size: int):
        for i in range(0, len(self.Y), size):
            labels = None if self.labels is None else self.labels[i : i + size]
            yield Chunk(self.X[i : i + size], self.Y[i : i + size], labels)

    @staticmethod
    def batch_of(words: list[str], vocab: Vocab, block_size: int, labels: torch.Tensor | None = None):
        """`words` as one batch, on the CPU: every window X (N, block_size), Y (N,), the words' one
        after the other, which word each window belongs to, (N,), and each window's labels, (N, K),
        from the words' labels (B, K) (None: none)."""
        X, Y = windows(words, vocab, block_size)
        owner = torch.repeat_interleave(torch.arange(len(words)), _windows_per_word(words))
        return X, Y, owner, None if labels is None else labels[owner]


def _windows_per_word(words: list[str]) -> torch.Tensor:
    return torch.tensor([len(w) + 1 for w in words])  # a window per character and the end token


def to_device(indices: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch's CPU indices onto `device`. Onto a GPU through pinned memory and without blocking: a
    copy from ordinary memory would make the host wait until the GPU has finished the last step."""
    if device.type == "cuda":
        return indices.pin_memory().to(device, non_blocking=True)
    return indices.to(device)
