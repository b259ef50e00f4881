"""A data file as a model sees it: its items split the lecture's way (Splits), the vocabulary and
label columns built from all of them, the facts a model takes from them (Facts), and the items a
sample is marked against (Seen)."""

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .data import DataError, Vocab, naming, split_words
from .labels import LabelColumns, Table, read_items


@dataclass(frozen=True)
class Facts:
    """What a model takes from its data, not from its options: the vocabulary's size, each label
    column's size (its values and unknown), and the longest item of any split (a model with a
    position table is sized by it)."""

    vocab_size: int = 27
    label_sizes: tuple[int, ...] = ()
    longest: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "label_sizes", tuple(self.label_sizes))  # (a list, from JSON)


@dataclass(frozen=True)
class Seen:
    """The items of the data a model was trained on, by split, so that a sample can be told apart as
    one of the training split (marked *), one of val or test (+, held out: a name the model has
    never seen, but no new one either), or new, as makemore tells them."""

    train: frozenset[str]
    held_out: frozenset[str]  # val and test

    @classmethod
    def of_checkpoint(cls, checkpoint: dict) -> "Seen":
        """What a checkpoint records (an earlier version's: its training split alone)."""
        words = [checkpoint.get(key, "") for key in ("train_words", "held_out_words")]
        return cls(*(frozenset(w.split("\n")) - {""} for w in words))

    def mark(self, name: str) -> str:
        return " *" if name in self.train else " +" if name in self.held_out else ""


def fingerprint(words: list[str], labels: torch.Tensor | None = None) -> str:
    if labels is not None:  # a conditional model's data is its items and their labels
        words = [f"{w}\t{' '.join(map(str, row))}" for w, row in zip(words, labels.tolist(), strict=True)]
    return hashlib.sha256("\n".join(words).encode("utf-8")).hexdigest()[:16]


SPLITS = ("train", "val", "test")


@dataclass
class Splits:
    """The words of a data file, split the lecture's way, and the vocabulary built from all of them;
    for a conditional model, the label columns and each split's labels, (N, K) long."""

    train: list[str]
    val: list[str]
    test: list[str]
    vocab: Vocab
    fingerprint: str
    label_columns: LabelColumns | None = None
    split_labels: dict[str, torch.Tensor] = field(default_factory=dict)  # by split name

    @classmethod
    def from_words(
        cls,
        words: list[str],
        vocab: Vocab | None = None,
        labels: torch.Tensor | None = None,
        label_columns: LabelColumns | None = None,
    ) -> "Splits":
        """labels (N, K): each word's, numbered by label_columns (None: a list without labels)."""
        if vocab is None:
            vocab = Vocab.from_words(words)
        else:
            vocab.check(words)  # every character must be known
        if labels is None:
            return cls(*split_words(words), vocab=vocab, fingerprint=fingerprint(words))
        parts = split_words(list(range(len(words))))  # the same shuffle, of the rows: items and labels alike
        split_labels = {name: labels[part] for name, part in zip(SPLITS, parts, strict=True)}
        return cls(
            *([words[i] for i in part] for part in parts),
            vocab,
            fingerprint(words, labels),
            label_columns,
            split_labels,
        )

    @classmethod
    def read(
        cls,
        path: str | Path,
        vocab: Vocab | None = None,
        label_columns: LabelColumns | None = None,
        use_labels: bool = True,
    ) -> "Splits":
        """A data file's splits: a list, or a table (.tsv, .csv) with its labels when use_labels. label_columns:
        a trained model's, whose numbering the table's labels take (None: the table's own)."""
        data = read_items(path)
        if vocab is not None:  # a trained model's: every character must be one it knows
            with naming(str(path)):
                vocab.check(data.items if isinstance(data, Table) else data)
        if not isinstance(data, Table):
            return cls.from_words(data, vocab)
        if not use_labels or not data.columns:
            return cls.from_words(data.items, vocab)
        columns = label_columns or LabelColumns.of(data)
        return cls.from_words(data.items, vocab, columns.encode(data, str(path)), columns)

    @property
    def facts(self) -> Facts:
        """What a model of these splits takes from them."""
        longest = max(len(w) for w in self.train + self.val + self.test)
        return Facts(len(self.vocab), self.label_sizes, longest)

    @property
    def seen(self) -> Seen:
        """The items of each split, which a sample is marked against."""
        return Seen(frozenset(self.train), frozenset(self.val + self.test))

    @property
    def label_sizes(self) -> tuple[int, ...]:
        """Each label column's size, its values and unknown: () without labels."""
        return self.label_columns.sizes if self.label_columns is not None else ()

    def labels(self, split: str) -> torch.Tensor | None:
        """The labels (N, K) of one split, or of "all" three, in words()' order; None without labels."""
        if not self.split_labels:
            return None
        return torch.cat([self.split_labels[s] for s in SPLITS]) if split == "all" else self.split_labels[split]

    def words(self, split: str) -> list[str]:
        """The items of one split, "train", "val" or "test", or of "all" three; an empty one is an error
        (a file of fewer than 6 items leaves the lecture's 80/10/10 split one short)."""
        words = self.train + self.val + self.test if split == "all" else getattr(self, split)
        if not words:
            n = len(self.train) + len(self.val) + len(self.test)
            items = "1 item" if n == 1 else f"{n} items"
            raise DataError(
                f"the {split} split is empty: the 80/10/10 split of {items} leaves it none "
                "(6 items or more fill all three)"
            )
        return words
