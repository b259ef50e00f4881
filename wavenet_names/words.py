"""Items and their characters, with no PyTorch: reading a word list as text, the vocabulary that numbers
its characters, the items a model has seen, and where its data file is. The exported models' sampler
(portable.py) reads these too, so nothing here imports torch."""

import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

PAD = "."  # index 0: the start padding and the end token, as in the lecture
LINE_BREAK = "\n"  # index 0 instead, for data with '.' in it (web addresses, "J.P."): no item holds one


class DataError(ValueError):
    """Bad input data: a message that names the file (or the character) and the problem."""


def shipped(name: str) -> Path:
    """A data file that comes with the package: data/NAME in a source checkout (and an editable
    install), wavenet_names/datasets/NAME in an installed wheel (pyproject.toml puts data/ there)."""
    installed = Path(__file__).resolve().parent / "datasets" / name
    return installed if installed.is_file() else Path(__file__).resolve().parents[1] / "data" / name


def training_data(record: dict) -> str:
    """The data file a model was trained on, from its checkpoint or an export's facts: a shipped model's
    (its `dataset`) wherever the package is installed, or the path its run recorded."""
    if record.get("dataset"):
        return str(shipped(record["dataset"]))
    return record["train_config"]["data"]


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
    """A data file's bytes as text, NFC-normalised, or one line that says why they are not UTF-8 text."""
    if b"\x00" in raw:
        raise DataError(f"{source}: looks like a binary file (it contains NUL bytes), expected UTF-8 text")
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark (Windows editors, spreadsheet exports) is not a character
    except UnicodeDecodeError as e:
        raise DataError(f"{source}: not UTF-8 text (bad byte at offset {e.start})") from None
    return unicodedata.normalize("NFC", text)  # one letter, one character: é typed as e and a combining accent too


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


@dataclass(frozen=True)
class Seen:
    """The items of the data a model was trained on, by split, so that a sample can be told apart as
    one of the training split (marked *), one of val or test (+, held out: a name the model has
    never seen, but no new one either), or new, as makemore tells them."""

    train: frozenset[str]
    held_out: frozenset[str]  # val and test
    missing: str | None = None  # why there are no items to mark against, when there are none

    @classmethod
    def of_checkpoint(cls, checkpoint: dict) -> "Seen | None":
        """What a checkpoint records (an earlier version's: its training split alone); None for one of a
        list too large to keep (seen_record), whose items are its data file's."""
        if checkpoint.get("seen_in_data"):
            return None
        words = [checkpoint.get(key, "") for key in ("train_words", "held_out_words")]
        return cls(*(frozenset(w.split("\n")) - {""} for w in words))

    def mark(self, name: str) -> str:
        return " *" if name in self.train else " +" if name in self.held_out else ""

    def mark_sampled(self, sampled) -> str:
        """A sampled name's mark as commands print it (choosing.Sampled: its name, and whether the model
        ended it): "*" of the training split, "+" of val or test, "" new, "cut" one the model did not end."""
        return self.mark(sampled.name).strip() if sampled.ended else "cut"
