"""How surprised a model is by data: its mean loss over a whole split (evaluate), and each item's loss
per character (score). Lower is more typical of the training data; the highest of a list are its odd
ones out (typos, foreign entries, junk lines). What `evaluate` and `score` read (evaluate_data,
ScoredItems) is checked here against the model: its data, its characters, its labels.
"""

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .batches import chunk_bounds
from .devices import float64_on
from .labels import Table
from .loading import LoadedModel
from .losses import widened
from .models import batches_for, kind_of
from .splits import Splits
from .words import DataError, Vocab


@torch.no_grad()
def evaluate(model, batches, chunk_size: int = 2048) -> float:
    """Mean loss over every example of a split (every character of every name, end tokens included).
    The sum stays on the device, in float64, so the host waits for it once, not at every chunk (on a
    device without float64, such as mps, it is taken on the CPU, chunk by chunk)."""
    was_training = model.training
    model.eval()
    try:  # however it ends (Ctrl-C in a notebook), the model goes back to the mode it was in
        total = 0.0
        for inputs, targets, labels in batches.chunks(chunk_size):
            _, loss = model(inputs, targets, labels=labels)  # the mean over the chunk's examples
            loss = loss if float64_on(loss.device) else loss.cpu()
            total = total + loss.double() * (targets != -1).sum().to(loss.device)
    finally:
        model.train(was_training)
    return float(total) / batches.n_examples


CHUNK_ITEMS = 2048  # items run through the model at once
CHUNK_POSITIONS = 65_536  # and at most this many padded positions: a long item makes a smaller chunk


def score(model, vocab: Vocab, words: list[str], labels: torch.Tensor | None = None) -> list[float]:
    """Each item's mean loss in nats per character, its end token included: evaluate()'s measure,
    item by item (so the mean of a split's scores, weighted by length + 1, is its evaluate() loss).
    The model runs in eval mode, so an item's score does not depend on the items beside it.
    labels (N, K): each item's, for a conditional model (None: all unknown)."""
    return list(stream_scores(model, vocab, words, labels))


def stream_scores(model, vocab: Vocab, words: list[str], labels: torch.Tensor | None = None) -> Iterator[float]:
    """score()'s scores, a chunk at a time: a caller can print the first while the rest are made."""
    vocab.check(words)  # an unknown character: the error names its item, before any work
    was_training = model.training
    model.eval()
    try:  # however it ends, the model goes back to the mode it was in
        for i, j in chunk_bounds([len(w) for w in words], CHUNK_ITEMS, CHUNK_POSITIONS):
            with torch.no_grad():  # left before yielding: the caller's code runs with its own grad mode
                losses = item_losses(model, vocab, words[i:j], None if labels is None else labels[i:j]).tolist()
            yield from losses
    finally:
        model.train(was_training)


def item_losses(model, vocab: Vocab, words: list[str], labels: torch.Tensor | None) -> torch.Tensor:
    """The mean loss of each of `words`, (B,), on the CPU, in the model's own batch layout."""
    device = next(model.parameters()).device
    batches = kind_of(model).batches
    inputs, targets, owner, labels = batches.batch_of(words, vocab, model.block_size, labels)  # owner: targets' shape
    labels = None if labels is None else labels.to(device)
    logits, _ = model(inputs.to(device), targets.to(device), labels=labels)  # (*targets.shape, vocab)
    losses = F.cross_entropy(
        widened(logits.flatten(0, -2)), targets.flatten().to(device), ignore_index=-1, reduction="none"
    ).cpu()
    totals = torch.zeros(len(words), dtype=losses.dtype).index_add_(0, owner.flatten(), losses)  # (B,): padding adds 0
    return totals / torch.tensor([len(w) + 1 for w in words])  # every character and the end token


def evaluate_data(loaded, data: str | None = None, split: str = "val") -> float:
    """The mean loss of a loaded model over one split ("train", "val", "test", or "all" of its items)
    of `data`, by default the file it was trained on. Every character must be one it knows; a
    conditional model reads a table's labels; and a split of other data than its own is refused,
    since that split is not the model's. `loaded`: a LoadedModel, run by PyTorch, or an export
    (portable.OnnxModel), whose full graph onnxruntime runs."""
    data = data or loaded.data
    columns = loaded.columns
    splits = Splits.read(data, loaded.vocab, columns, use_labels=columns is not None)
    words, labels = splits.words(split), splits.labels(split)  # (an empty split is its own error)
    trained_on = loaded.data_fingerprint
    if split != "all" and trained_on is not None and splits.fingerprint != trained_on:
        raise DataError(
            f"{data}: not the data this model was trained on (its items or their order differ), so its "
            f"{split} split is not the model's; --split all evaluates every item of it"
        )
    if not isinstance(loaded, LoadedModel):
        return loaded.loss(words, None if labels is None else labels.numpy())
    device = next(loaded.model.parameters()).device
    return evaluate(loaded.model, batches_for(loaded.model, splits, split, device))


@dataclass
class ScoredItems:
    """The items of a list or a table as a loaded model scores them."""

    words: list[str]
    labels: np.ndarray | None  # (N, K) int64: a table's, for a conditional model; None: unknown, or no labels
    fields: list[str]  # each item's label fields as printed after it, tab-separated ("" for a list's)
    skipped: int = 0  # items left out for a character the model does not know

    @classmethod
    def of(
        cls, loaded: LoadedModel, data: list[str] | Table, source: str, lowercase: bool = False, skip: bool = False
    ) -> "ScoredItems":
        """`data` (read from `source`, which errors name), each item lowercased if asked. An item with a
        character the model does not know is an error, before any score, unless `skip`: then it is
        left out, and counted."""
        items = cls._read(loaded, data, source)
        if lowercase:
            items.words = [word.lower() for word in items.words]
        unknown = [i for i, word in enumerate(items.words) if not loaded.vocab.knows(word)]
        if unknown and not skip:
            first = items.words[unknown[0]]
            strange = "".join(sorted(set(first) - set(loaded.vocab.chars)))
            # --lowercase is advice only where it was not given and would make an item known
            lowering = not lowercase and any(loaded.vocab.knows(items.words[i].lower()) for i in unknown)
            raise DataError(
                f"{source}: items with a character the model does not know: {len(unknown):,} of "
                f"{len(items.words):,}, the first {first[:40]!r} ({strange!r}); "
                f"pass {'--lowercase or ' if lowering else ''}--skip-unknown"
            )
        kept = sorted(set(range(len(items.words))) - set(unknown))
        labels = None if items.labels is None else items.labels[kept]
        return cls([items.words[i] for i in kept], labels, [items.fields[i] for i in kept], len(unknown))

    @classmethod
    def _read(cls, loaded: LoadedModel, data: list[str] | Table, source: str) -> "ScoredItems":
        if not isinstance(data, Table):  # (a conditional model reads a list's items with their labels unknown)
            return cls(list(data), None, [""] * len(data))
        labels = loaded.columns.encode(data, source) if loaded.columns is not None else None
        return cls(data.items, labels, ["".join(f"\t{field}" for field in row) for row in data.fields])

    def scores(self, loaded) -> Iterator[float]:
        """Each item's score, a chunk at a time: by PyTorch for a LoadedModel (stream_scores), or by
        onnxruntime's full graph for an export (portable.OnnxModel.losses)."""
        if not isinstance(loaded, LoadedModel):
            return loaded.losses(self.words, self.labels)
        labels = None if self.labels is None else torch.from_numpy(self.labels)
        return stream_scores(loaded.model, loaded.vocab, self.words, labels)
