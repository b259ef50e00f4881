"""A data file as a model sees it: its items split the lecture's way (Splits), the vocabulary and
label columns built from all of them, the facts a model takes from them (Facts), and the items a
sample is marked against (Seen)."""

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from string import ascii_lowercase

import torch

from .data import NAMES_TXT, split_words
from .labels import LabelColumns, Table, read_items
from .words import DataError, Seen, Vocab, naming

SHOWN_CHARACTERS = 40  # of a vocabulary beyond a-z, in a note


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


# characters of items that a checkpoint keeps for its marks (names.txt has 0.23 M, the decade table 1.1 M)
SEEN_LIMIT = 1 << 22


def seen_record(splits: "Splits") -> dict:
    """What a checkpoint keeps of its data's items, for the marks of its samples: the items of each
    split, up to SEEN_LIMIT characters. Past it, none (a checkpoint's size must not grow with its data:
    a list of 6.7 million lines made 51 MB ones), and the marks are read from the data file when it is
    there and the same (loading.LoadedModel.seen)."""
    train, held_out = splits.train, splits.val + splits.test
    if sum(map(len, train)) + sum(map(len, held_out)) + len(train) + len(held_out) > SEEN_LIMIT:
        return {"seen_in_data": True}
    return {"train_words": "\n".join(train), "held_out_words": "\n".join(held_out)}


def fingerprint(words: list[str], labels: torch.Tensor | None = None) -> str:
    if labels is not None:  # a conditional model's data is its items and their labels
        words = [f"{w}\t{' '.join(map(str, row))}" for w, row in zip(words, labels.tolist(), strict=True)]
    return hashlib.sha256("\n".join(words).encode("utf-8")).hexdigest()[:16]


SPLITS = ("train", "val", "test")


def keeps_repeats(path: str | Path) -> bool:
    """Whether a data file's repeated lines stay: only the shipped data/names.txt's. It lists 2,559 names
    twice (given to girls and to boys, once for each, as the lecture's own file does), and every figure
    this project gives for it (val 1.9771, the race, the presets) is of the split with them. In any
    other file a repeat is dropped before the split: its copies could fall in train and in val, and
    val would score the model on names it trained on."""
    return Path(path).resolve() == NAMES_TXT.resolve()


def without_repeats(data: list[str] | Table, keep: bool = False) -> tuple[list[str] | Table, int]:
    """The data with each line once, in the order first seen (a table's line is its item with every
    field, so a name of two decades is two lines), and how many lines were dropped; `keep`: as it is."""
    if keep:
        return data, 0
    keys = list(zip(data.items, data.fields, strict=True)) if isinstance(data, Table) else data
    seen, first = set(), []  # the index of each line's first copy
    for i, key in enumerate(keys):
        if key not in seen:
            seen.add(key)
            first.append(i)
    if len(first) == len(keys):
        return data, 0
    if isinstance(data, Table):
        items, fields, lines = ([column[i] for i in first] for column in (data.items, data.fields, data.lines))
        kept = Table(items, data.columns, fields, lines)
    else:
        kept = [data[i] for i in first]
    return kept, len(keys) - len(first)


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
    repeats: int = 0  # lines of the file that repeated an earlier one, dropped before the split (read())

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
        data, repeats = without_repeats(read_items(path), keeps_repeats(path))
        if vocab is not None:  # a trained model's: every character must be one it knows
            with naming(str(path)):
                vocab.check(data.items if isinstance(data, Table) else data)
        if not isinstance(data, Table):
            splits = cls.from_words(data, vocab)
        elif not use_labels or not data.columns:
            splits = cls.from_words(data.items, vocab)
        else:
            columns = label_columns or LabelColumns.of(data)
            splits = cls.from_words(data.items, vocab, torch.from_numpy(columns.encode(data, str(path))), columns)
        splits.repeats = repeats
        return splits

    def notes(self, source: str) -> tuple[list[str], list[str]]:
        """What a run on these splits says about its data before it trains, as (notes, warnings): the
        repeats dropped, the characters beyond a-z (each one to the model, the space included), and
        letters that come in both cases, which the model learns as two characters."""
        notes, warnings = [], []
        if self.repeats:
            items = len(self.train) + len(self.val) + len(self.test)
            notes.append(
                f"{source}: dropped {self.repeats:,} repeated lines before the split, so that no item is in "
                f"train and in val alike; {items:,} items remain"
            )
        chars = self.vocab.chars[1:]
        beyond = [ch for ch in chars if ch not in ascii_lowercase]
        if beyond:
            shown = " ".join(map(repr, beyond[:SHOWN_CHARACTERS])) + (" ..." if len(beyond) > SHOWN_CHARACTERS else "")
            notes.append(f"{source}: {len(chars)} characters, each one to the model; beyond a-z: {shown}")
        both = [ch for ch in chars if ch != ch.upper() and ch.upper() in chars]
        if both:
            pairs = ", ".join(f"{ch.upper()!r} and {ch!r}" for ch in both[:3])
            more = f" (and {len(both) - 3} more letters)" if len(both) > 3 else ""
            warnings.append(
                f"{source} mixes upper and lower case: {pairs}{more} are two characters each to the model, "
                "which learns them apart; lowercase the file if case does not matter"
            )
        return notes, warnings

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
