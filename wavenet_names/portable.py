"""Names from an exported model (`wavenet-names export`) with numpy and onnxruntime alone: no PyTorch.

    from wavenet_names.portable import OnnxModel
    model = OnnxModel.load("names-onnx")
    names = model.names(n=10, seed=0, min_len=4, ends_with="a", new=True)
    losses = model.scores(["emma", "zzyzx"])

Sampling runs the step graph one character at a time, and each character is chosen as PyTorch's
sampler chooses it (choosing.py): the same seed gives the same names as `wavenet-names sample`.
Constraints are kept by the same rejection (constraints.py), through the same request (draws.py).
This module, and the package modules it imports, never import torch (a test runs it where
`import torch` fails): `pip install 'wavenet_names[onnx]'`, or copy the package and install numpy and
onnxruntime.
"""

import gzip
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .choosing import SampleConfig, Sampled, draw_names, random_numbers
from .draws import NameRequest, draw
from .exported import FULL, KEY, SEEN, STEP, ExportedFacts
from .labels import LabelColumns, Table, parse_labels
from .words import DataError, Seen, Vocab, training_data

SCORED_AT_ONCE = 256  # items a full-graph run scores together


def session_options() -> ort.SessionOptions:
    """One thread per graph, that sleeps when idle: these graphs are small, and onnxruntime's default,
    a pool of threads that spin while they wait, would take the cores from everything else in the
    process (PyTorch in a benchmark beside it, a server's other requests)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


@dataclass
class OnnxModel:
    """An exported model, loaded for use: what LoadedModel is to a checkpoint, so that a NameRequest
    (draws.py) draws from either."""

    directory: Path
    step: ort.InferenceSession
    full: ort.InferenceSession
    facts: ExportedFacts

    @classmethod
    def load(cls, directory: str | Path) -> "OnnxModel":
        """The graphs of an exported directory; one DataError that says what is wrong otherwise (no such
        directory, a missing graph, a file that is not ONNX, a graph of another export format)."""
        directory = Path(directory)
        if not directory.is_dir():
            raise DataError(f"{directory}: no such directory (wavenet-names export --out writes one)")
        step, step_facts = _session(directory / STEP)
        full, _ = _session(directory / FULL)
        return cls(directory, step, full, step_facts)

    # --- what a NameRequest asks of a model ---------------------------------------------------------

    @cached_property
    def vocab(self) -> Vocab:
        return Vocab(self.facts.chars)

    @cached_property
    def columns(self) -> LabelColumns | None:
        return LabelColumns.from_saved(self.facts.labels) if self.facts.labels else None

    @property
    def cut_at(self) -> int:
        return self.facts.cut_at

    @property
    def val(self) -> float | None:
        return self.facts.val

    # --- what `evaluate --onnx` asks of it (scoring.evaluate_data) -----------------------------------

    @property
    def data(self) -> str:
        """The data file it was trained on, as its checkpoint named it."""
        train_config = self.facts.recipe.get("train_config") or {}
        if not self.facts.dataset and "data" not in train_config:  # a model exported from no checkpoint
            raise DataError(f"{self.directory}: the export names no data file it was trained on; give one (--data)")
        return training_data({"dataset": self.facts.dataset, "train_config": train_config})

    @property
    def data_fingerprint(self) -> str | None:
        """Of the items of the data it was trained on, in their order: a split of other data is refused."""
        return self.facts.data_fingerprint

    @cached_property
    def seen(self) -> Seen:
        """The items of each split of its data, if the export wrote them (seen.json.gz)."""
        path = self.directory / SEEN
        if not path.is_file():
            return Seen(frozenset(), frozenset(), f"names are not marked * or +: {path} is missing")
        names = json.loads(gzip.decompress(path.read_bytes()))
        return Seen(frozenset(names["train"]), frozenset(names["held_out"]))

    def labels(self, given: list[str] | tuple[str, ...], what: str = "--label") -> np.ndarray | None:
        """Labels as "column=value", (K,) int64, unknown where not given; None for a model without labels,
        which refuses any."""
        return parse_labels(self.columns, given, what)

    def mark(self, sampled: Sampled) -> str:
        """ "*": of the training split; "+": of val or test; "": new; "cut": a name the model did not end."""
        return self.seen.mark_sampled(sampled)

    @contextmanager
    def sampler(self, config: SampleConfig, labels: np.ndarray | None = None) -> Iterator[Callable[[int], list]]:
        """draw(n), which samples n more names at once, each with these labels (K,), from one random
        stream: the same seed gives the same names as PyTorch's sampling.sampler."""
        self.vocab.encode(config.prefix)  # a character it does not know: now, before any drawing
        numbers = random_numbers(config.seed)
        start = self._start(labels)  # every name's state before its '.': the same for all of them

        def draw(n: int) -> list[Sampled]:
            feeds = {} if labels is None else {"labels": np.repeat(labels[None], n, axis=0)}
            queues = [np.repeat(queue, n, axis=0) for queue in start]

            def next_logits(tokens: np.ndarray) -> np.ndarray:
                nonlocal queues
                logits, *queues = self.step.run(None, {"token": tokens, **feeds, **self._queues(queues)})
                return logits

            return draw_names(next_logits, n, self.vocab, config.cut_at - len(config.prefix), config, numbers)

        yield draw

    # --- the convenience of one call ----------------------------------------------------------------

    def names(self, labels=(), exclude=(), **options) -> list[str]:
        """Names, as `wavenet-names sample` takes its options (n, seed, temperature, top_k, top_p,
        prefix, cut_at, min_len, max_len, ends_with, new, unique, tries) and its labels ("sex=F");
        exclude: names to leave out. Raises constraints.TooRare if too few meet the constraints."""
        unknown = set(options) - NameRequest.option_names()
        if unknown:
            raise TypeError(f"unknown options: {', '.join(sorted(unknown))}")
        request = NameRequest.of(self, options, labels, exclude, what="labels")
        return [sampled.name for sampled in draw(self, request)]

    def scores(self, items: list[str] | Table, labels=()) -> list[float]:
        """Each item's loss per character, the end token included (nats), as `wavenet-names score`
        gives it: the highest are the least like the training data. items: a list, read with these
        labels ("sex=F", the rest unknown), or a Table of items and their labels."""
        if isinstance(items, Table):
            words, numbers = items.items, self.columns.encode(items, "the table") if self.columns else None
        else:
            words, given = list(items), self.labels(labels, "labels")
            numbers = None if given is None else np.repeat(given[None], len(words), axis=0)
        return list(self.losses(words, numbers))

    def losses(self, words: list[str], labels: np.ndarray | None = None) -> Iterator[float]:
        """scores() of words with their label numbers (N, K), SCORED_AT_ONCE items at a time: the first
        come while the rest are computed."""
        for sums, counts in self._chunks(words, labels):
            yield from (sums / counts).tolist()

    def loss(self, words: list[str], labels: np.ndarray | None = None) -> float:
        """The mean loss over every character of `words`, end tokens included: what `evaluate` gives
        for a split (each item weighs by its length + 1)."""
        total = count = 0.0
        for sums, counts in self._chunks(words, labels):
            total, count = total + sums.sum(), count + counts.sum()
        return float(total / count)

    # --- the graphs ---------------------------------------------------------------------------------

    def _start(self, labels: np.ndarray | None) -> list[np.ndarray]:
        """One name's queues before its '.': from zeros, block_size - 1 '.' tokens (exported.py), (1, ...)."""
        feeds = {} if labels is None else {"labels": labels[None]}
        queues = [np.zeros((1, d, n), dtype=np.float32) for d, n in self.facts.queues]
        token = np.zeros(1, dtype=np.int64)
        for _ in range(self.facts.block_size - 1):
            _, *queues = self.step.run(None, {"token": token, **feeds, **self._queues(queues)})
        return queues

    @staticmethod
    def _queues(queues: list[np.ndarray]) -> dict[str, np.ndarray]:
        return {f"queue{i}": queue for i, queue in enumerate(queues)}

    def _chunks(self, words: list[str], labels: np.ndarray | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """_losses() of SCORED_AT_ONCE items at a time."""
        self.vocab.check(words)
        for i in range(0, len(words), SCORED_AT_ONCE):
            chunk = None if labels is None else labels[i : i + SCORED_AT_ONCE]
            yield self._losses(words[i : i + SCORED_AT_ONCE], chunk)

    def _losses(self, words: list[str], labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Each word's summed loss over its characters and end token, and how many those are (float64),
        from one run of the full graph."""
        encoded = [self.vocab.encode(w) + [0] for w in words]  # targets: each character, then the end
        longest = max(map(len, encoded))
        targets = np.full((len(words), longest), -1, dtype=np.int64)
        for row, e in zip(targets, encoded, strict=True):
            row[: len(e)] = e
        idx = np.zeros((len(words), self.facts.block_size + longest - 1), dtype=np.int64)  # '.' * block_size, ...
        idx[:, self.facts.block_size :] = np.maximum(targets[:, :-1], 0)  # each name but its last target
        feeds = {"idx": idx} if labels is None else {"idx": idx, "labels": labels}
        (logits,) = self.full.run(None, feeds)  # (B, longest, V)
        logits = logits.astype(np.float64)
        shifted = logits - logits.max(axis=-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        picked = np.take_along_axis(log_probs, np.maximum(targets, 0)[..., None], axis=-1)[..., 0]
        return -(picked * (targets >= 0)).sum(axis=1), np.array([len(e) for e in encoded], dtype=np.float64)


def _session(path: Path) -> tuple[ort.InferenceSession, ExportedFacts]:
    """A graph of an export, and its facts; one DataError for a missing file, a file that is not an
    ONNX graph, or a graph without this package's facts or of another export format."""
    if not path.is_file():
        raise DataError(f"{path}: no such file; is {path.parent} a directory that wavenet-names export wrote?")
    try:
        session = ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's own exception types: a bad protobuf, a graph it cannot run
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{path}: not an ONNX graph onnxruntime can read ({first})") from None
    saved = session.get_modelmeta().custom_metadata_map.get(KEY)
    if saved is None:
        raise DataError(f"{path}: an ONNX graph, but not one that wavenet-names export wrote (no {KEY} facts)")
    try:
        facts = ExportedFacts.from_json(saved, str(path))
    except (ValueError, TypeError, KeyError) as e:
        raise DataError(str(e) if isinstance(e, ValueError) else f"{path}: its facts cannot be read ({e})") from None
    return session, facts
