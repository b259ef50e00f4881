"""Names data: reading a word list, the character vocabulary, the lecture's split, and the two views
of the same examples that the two kinds of model consume.

Every name "emma" yields len+1 examples, one per character to predict, the end token included:

    ........ -> e     .......e -> m     ......em -> m     .....emm -> a     ....emma -> .

The per-position models (FlatMLP, HierarchicalMLP) see these as `windows`: X (N, block_size), Y (N,).
The convolutional model sees whole names: `pad_batch` lays each name after block_size '.' tokens and
right-pads the batch, with -1 targets at padding, so one forward pass trains every position of a name.
"""

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import torch

from .packing import bucket, packed_rows


def shipped(name: str) -> Path:
    """A data file that comes with the package: data/NAME in a source checkout (and an editable
    install), wavenet_names/datasets/NAME in an installed wheel (pyproject.toml puts data/ there)."""
    installed = Path(__file__).resolve().parent / "datasets" / name
    return installed if installed.is_file() else Path(__file__).resolve().parents[1] / "data" / name


NAMES_TXT = shipped("names.txt")  # the default data: 32,469 US baby names of 2017 (data/build_names.py)
NAMES_BY_DECADE = shipped("names-by-decade.tsv")  # names with their sex and decade, 1880 to 2017 (labels.py)
PAD = "."  # index 0: the start padding and the end token, as in the lecture
LINE_BREAK = "\n"  # index 0 instead, for data with '.' in it (web addresses, "J.P."): no item holds one


class DataError(ValueError):
    """Bad input data: a message that names the file (or the character) and the problem."""


def read_words(path: str | Path) -> list[str]:
    """One item per line, whitespace stripped, blank lines skipped."""
    return parse_words(read_text(path), str(path))


def read_text(path: str | Path) -> bytes:
    """A data file's bytes, or one line that says why there are none."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a text file")
    return path.read_bytes()


def parse_words(raw: bytes, source: str) -> list[str]:
    """read_words() for bytes from anywhere (standard input); `source` names them in errors."""
    words = [line.strip() for line in decode_text(raw, source).splitlines()]
    words = [w for w in words if w]
    if not words:
        raise DataError(f"{source}: empty, expected one item per line")
    return words


@contextmanager
def naming(source: str):
    """A DataError from inside (a character the model does not know) names the file of its item."""
    try:
        yield
    except DataError as e:
        raise DataError(f"{source}: {e}") from None


def decode_text(raw: bytes, source: str) -> str:
    """A data file's bytes as text, or one line that says why they are not UTF-8 text."""
    if b"\x00" in raw:
        raise DataError(f"{source}: looks like a binary file (it contains NUL bytes), expected UTF-8 text")
    try:
        return raw.decode("utf-8-sig")  # a byte-order mark (Windows editors, spreadsheet exports) is not a character
    except UnicodeDecodeError as e:
        raise DataError(f"{source}: not UTF-8 text (bad byte at offset {e.start})") from None


@dataclass(frozen=True)
class Vocab:
    """Characters <-> integers. 0 is the start/end token, shown as the lecture's '.' (or, when the
    data has '.' in it, as a line break); the characters of the data follow, sorted, from 1."""

    chars: tuple[str, ...]  # chars[0]: the start/end token, never a character of an item

    @classmethod
    def from_words(cls, words: list[str]) -> "Vocab":
        chars = sorted(set("".join(words)))
        return cls((LINE_BREAK if PAD in chars else PAD, *chars))

    def __post_init__(self):
        if not self.chars or self.chars[0] not in (PAD, LINE_BREAK):
            raise ValueError(f"a vocabulary starts with {PAD!r} or a line break")
        if len(set(self.chars)) != len(self.chars):
            raise ValueError("a vocabulary has no repeated characters")

    def __len__(self) -> int:
        return len(self.chars)

    @cached_property  # encode() runs once per item: build the table once
    def stoi(self) -> dict[str, int]:
        """The characters of items: the start/end token is not one (a '.' in a --prefix is no end)."""
        return {ch: i for i, ch in enumerate(self.chars) if i > 0}

    def encode(self, word: str) -> list[int]:
        stoi = self.stoi
        for ch in word:
            if ch not in stoi:
                item = word if len(word) <= 40 else word[:37] + "..."
                raise DataError(f"character {ch!r} is not in the vocabulary ({self._shown()}), in {item!r}")
        return [stoi[ch] for ch in word]

    def knows(self, word: str) -> bool:
        """Whether every character of `word` is in the vocabulary."""
        return all(ch in self.stoi for ch in word)

    def check(self, words: list[str]) -> None:
        """Raise encode()'s error for the first item with a character outside the vocabulary."""
        if not set("".join(words)) <= self.stoi.keys():
            for word in words:
                self.encode(word)

    def _shown(self) -> str:
        """The characters, for an error message: all of a short vocabulary, the start of a long one."""
        chars = "".join(self.chars[1:])
        return chars if len(chars) <= 64 else f"{len(chars):,} characters: {chars[:32]}..."

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def split_words(words: list[str], seed: int = 42) -> tuple[list[str], list[str], list[str]]:
    """The lecture's split: random.seed(42); random.shuffle(words); then 80% / 10% / 10%.

    A private Random(seed) shuffles exactly as the seeded global one does, without touching global state.
    """
    words = list(words)
    random.Random(seed).shuffle(words)
    n1, n2 = int(0.8 * len(words)), int(0.9 * len(words))
    return words[:n1], words[n1:n2], words[n2:]


def windows(words: list[str], vocab: Vocab, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The lecture's build_dataset: X (N, block_size) contexts, Y (N,) next characters."""
    xs, ys = [], []
    for w in words:
        context = [0] * block_size
        for ix in vocab.encode(w) + [0]:
            xs.append(context)
            ys.append(ix)
            context = context[1:] + [ix]
    return torch.tensor(xs, dtype=torch.long), torch.tensor(ys, dtype=torch.long)


def encode_names(words: list[str], vocab: Vocab) -> tuple[torch.Tensor, torch.Tensor]:
    """All names as one right-padded matrix, for a batch you lay out yourself (see pad_batch).

    Returns tokens (N, max_len) with 0 after each name, and lengths (N,).
    """
    chars, starts, lengths = pack_names(words, vocab)
    return unpack_names(chars, starts, lengths, int(lengths.max()) if len(lengths) else 0), lengths


def pack_names(words: list[str], vocab: Vocab) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every name's characters end to end, chars (C,), with where each name starts in them and its
    length, starts and lengths (N,): memory in proportion to the characters. A right-padded
    (N, max_len) matrix would make one long item cost N times its length."""
    encoded = [vocab.encode(w) for w in words]
    lengths = torch.tensor([len(e) for e in encoded], dtype=torch.long)
    chars = torch.tensor([c for e in encoded for c in e], dtype=torch.long)
    return chars, lengths.cumsum(0) - lengths, lengths


def unpack_names(chars: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor, longest: int) -> torch.Tensor:
    """The names that start at starts (B,) in chars (C,), of lengths (B,), as a (B, longest) matrix
    right-padded with 0, on chars' device. longest >= max(lengths), given so no device is read."""
    columns = torch.arange(longest, device=chars.device)
    inside = columns < lengths[:, None]  # (B, longest)
    at = (starts[:, None] + columns).masked_fill(~inside, 0)  # past its name, a row reads any valid entry...
    return chars[at].masked_fill(~inside, 0)  # ...then pads with 0


def pad_batch(
    tokens: torch.Tensor, lengths: torch.Tensor, block_size: int, longest: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole names in the conv model's layout.

    tokens (B, L) right-padded names, lengths (B,); longest: max(lengths) when the caller knows it
    without reading it from a GPU, or more, for a wider layout. Returns
      idx     (B, block_size + n - 1): block_size '.' tokens, then the name, then padding '.',
      targets (B, n): the name, then the end token 0, then -1 at padding,
    where n = longest + 1 is the number of predictions of the longest name. Output j of the model
    sees idx[:, j : j + block_size] and predicts targets[:, j].
    """
    B = tokens.shape[0]
    n = (int(lengths.max()) if longest is None else longest) + 1
    names = torch.zeros(B, n, dtype=torch.long, device=tokens.device)
    names[:, : min(n, tokens.shape[1])] = tokens[:, :n]
    positions = torch.arange(n, device=tokens.device)
    targets = names.masked_fill(positions > lengths[:, None], -1)  # (B, n): name, end token 0, -1s
    idx = torch.cat([names.new_zeros(B, block_size), names[:, : n - 1]], dim=1)  # (B, block_size + n - 1)
    return idx, targets


class Batch(NamedTuple):
    """A training batch, as a layout's sample() draws it: what the model takes, and what the trainer
    needs to know about it without asking the device."""

    inputs: torch.Tensor
    targets: torch.Tensor
    positions: int  # the targets the loss averages over (this rank's share)
    weight: float  # world_size * positions / (the whole batch's positions): the share's part in the mean
    rows: int | None = None  # ConvWaveNet's packed rows in a fixed-shape batch (see NameBatches.sample)
    labels: torch.Tensor | None = None  # (B, K) each input's labels (see labels.py), for a conditional model


class Chunk(NamedTuple):
    """A part of a split for evaluation: inputs, targets and, for a conditional model, labels (B, K)."""

    inputs: torch.Tensor
    targets: torch.Tensor
    labels: torch.Tensor | None = None


class NameBatches:
    """A split as whole names, for ConvWaveNet: a batch is a set of names, every position trained.

    The names are kept end to end (see pack_names), so a split costs memory in proportion to its
    characters whatever its longest item, and each batch is laid out only as wide as its own longest
    (or, with fixed shapes, as a bucket: see sample).
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
        chars, starts, self.lengths_cpu = pack_names(words, vocab)
        self.chars, self.starts, self.lengths = (t.to(device) for t in (chars, starts, self.lengths_cpu))
        self.n_examples = int(self.lengths_cpu.sum()) + len(words)  # every character and each end token
        self.longest = int(self.lengths_cpu.max()) if len(words) else 0

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
        return Batch(*self._batch(ix, longest), positions, weight, rows, self._labels(ix))

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

    def _batch(self, ix: torch.Tensor, longest: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The names ix (B,), on the device, in the conv model's layout (see pad_batch)."""
        lengths = self.lengths[ix]
        return pad_batch(unpack_names(self.chars, self.starts[ix], lengths, longest), lengths, self.block_size, longest)


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
        return Batch(self.X[mine], self.Y[mine], len(mine), world_size * len(mine) / batch_size, labels=labels)

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
