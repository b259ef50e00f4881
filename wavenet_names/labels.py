"""Labels: the columns of a table of items that a model can be conditioned on, such as a name's sex
and decade (WaveNet's global conditioning, arXiv:1609.03499 section 2.5).

A table is a tab-separated file (.tsv), or a comma-separated one (.csv, with the csv module's
quoting), with a header row: the first column holds the items, every other column a label. Each
column's values are numbered from 1, in sorted order; 0 is the column's "unknown". An empty field
reads as unknown, training puts unknown in place of a label at random (the models' label dropout),
and `sample` uses it for every label it is not given.

    name    sex    decade
    mary    F      1880
"""

import csv
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from .words import DataError, decode_text, parse_words, read_text

UNKNOWN = 0  # every column's value for "not given"
DELIMITERS = {".tsv": "\t", ".csv": ","}  # a table's suffix, and what separates its fields


@dataclass(frozen=True)
class Table:
    """A table's items and their labels, as written: fields[i] holds items[i]'s label fields, one per
    column of `columns`, from line lines[i] of its file (for errors)."""

    items: list[str]
    columns: tuple[str, ...]
    fields: list[tuple[str, ...]]
    lines: list[int]


def read_items(path: str | Path) -> list[str] | Table:
    """A data file: a Table for a .tsv or .csv file, one item per line for any other."""
    delimiter = DELIMITERS.get(Path(path).suffix.lower())
    if delimiter is None:
        return parse_words(read_text(path), str(path))
    return parse_table(read_text(path), str(path), delimiter)


def parse_table(raw: bytes, source: str, delimiter: str = "\t") -> Table:
    """A table's bytes as a Table; `source` names them in errors. Blank lines are skipped. With
    delimiter ",", fields are read as the csv module reads them ("a, b" in quotes is one field)."""
    lines = [(number, line) for number, line in enumerate(decode_text(raw, source).splitlines(), 1) if line.strip()]
    if not lines:
        raise DataError(f"{source}: empty, expected a header row, then one item per row")
    header = tuple(name.strip() for name in _fields(lines[0][1], delimiter))
    if not all(header) or len(set(header)) != len(header):
        raise DataError(f"{source}: the header row must name every column once, got {' | '.join(header)}")
    items, fields, numbers = [], [], []
    for number, line in lines[1:]:
        row = [field.strip() for field in _fields(line, delimiter)]
        if len(row) != len(header):
            raise DataError(f"{source} line {number}: {len(row)} fields, expected {len(header)} ({', '.join(header)})")
        if not row[0]:
            raise DataError(f"{source} line {number}: the {header[0]} field is empty")
        items.append(row[0])
        fields.append(tuple(row[1:]))
        numbers.append(number)
    if not items:
        raise DataError(f"{source}: a header row and no items, expected one item per row after it")
    return Table(items, header[1:], fields, numbers)


def _fields(line: str, delimiter: str) -> list[str]:
    return line.split("\t") if delimiter == "\t" else next(csv.reader([line], delimiter=delimiter))


@dataclass(frozen=True)
class LabelColumns:
    """The label columns a model was trained with, and the values each takes (numbered from 1)."""

    names: tuple[str, ...]
    values: tuple[tuple[str, ...], ...]  # per column, its values, sorted

    @classmethod
    def of(cls, table: Table) -> "LabelColumns":
        values = [sorted({row[k] for row in table.fields} - {""}) for k in range(len(table.columns))]
        return cls(table.columns, tuple(map(tuple, values)))

    @classmethod
    def from_saved(cls, saved: dict) -> "LabelColumns":
        return cls(tuple(saved["names"]), tuple(map(tuple, saved["values"])))

    def saved(self) -> dict:
        """What a checkpoint holds: plain lists."""
        return {"names": list(self.names), "values": [list(v) for v in self.values]}

    @property
    def sizes(self) -> tuple[int, ...]:
        """How many values each column's embedding has: its values, and unknown."""
        return tuple(len(v) + 1 for v in self.values)

    def encode(self, table: Table, source: str) -> np.ndarray:
        """The table's labels as numbers, (N, len(names)) int64 (torch.from_numpy takes them as they lie).
        The table's columns are matched by name: a column the model has and the table lacks is unknown;
        one the table has and the model lacks, or a value the model never saw, is an error."""
        for name in table.columns:
            if name not in self.names:
                raise DataError(f"{source}: column {name!r} is not a label of this model ({self._listed()})")
        # per model column, the table's column that holds it (None: unknown throughout)
        at = [table.columns.index(name) if name in table.columns else None for name in self.names]
        rows = []  # built as lists, then one array: an array written entry by entry takes seconds
        for fields, line in zip(table.fields, table.lines, strict=True):
            row = [UNKNOWN if j is None else self._number(k, fields[j]) for k, j in enumerate(at)]
            if None in row:
                k = row.index(None)
                raise DataError(
                    f"{source} line {line}: {self.names[k]} {fields[at[k]]!r} is not a value this "
                    f"model knows ({self.choices(k)})"
                )
            rows.append(row)
        return np.array(rows, dtype=np.int64).reshape(len(rows), len(self.names))

    def parse(self, given: list[str], what: str = "--label") -> np.ndarray:
        """`sample --label` values, ["sex=F", "decade=1920"], as numbers (len(names),) int64: unknown where
        not given. `what` names them in errors (the server's "label")."""
        labels = np.zeros(len(self.names), dtype=np.int64)
        seen = set()
        for pair in given:
            name, equals, value = pair.partition("=")
            if not equals:
                raise DataError(f"{what} {pair!r}: expected COLUMN=VALUE, e.g. {self._example()}")
            if name not in self.names:
                raise DataError(f"{what} {pair}: {name!r} is not a label of this model ({self._listed()})")
            if name in seen:
                raise DataError(f"{what} {name} is given twice")
            seen.add(name)
            k = self.names.index(name)
            number = self._number(k, value)
            if number is None:
                raise DataError(f"{what} {pair}: {value!r} is not a value of {name} ({self.choices(k)})")
            labels[k] = number
        return labels

    @cached_property  # encode() looks up every field of a table: build the tables once
    def _numbering(self) -> list[dict[str, int]]:
        """Per column, each value's number: 1, 2, ... in sorted order (0 is unknown)."""
        return [{value: i for i, value in enumerate(values, start=1)} for values in self.values]

    def _number(self, k: int, value: str) -> int | None:
        """Column k's number for `value` ("" is unknown); None for a value the model never saw."""
        return self._numbering[k].get(value) if value else UNKNOWN

    def choices(self, k: int) -> str:
        """Column k's values, for an error message: all of a few, the first and last of many."""
        values = self.values[k]
        listed = ", ".join(values) if len(values) <= 20 else f"{', '.join(values[:10])}, ..., {values[-1]}"
        return f"{self.names[k]} takes {listed}"

    def _listed(self) -> str:
        return f"its labels are {', '.join(self.names)}" if self.names else "it has no labels"

    def _example(self) -> str:
        return f"--label {self.names[0]}={self.values[0][0]}" if self.names and self.values[0] else "--label sex=F"


def parse_labels(columns: LabelColumns | None, given: list[str] | tuple[str, ...], what: str = "--label"):
    """Labels as "column=value" for a model with these columns (LabelColumns.parse: (K,) int64, unknown
    where not given); None for a model without labels (columns None), which refuses any. `what` names
    them in errors (the server's "labels")."""
    if columns is None:
        if given:
            raise DataError(f"{what}: this model was trained without labels (on a list of items, or with --no-labels)")
        return None
    return columns.parse(list(given), what)
