"""How surprised a model is by each item of a list: its loss per character. Lower is more typical of
the training data; the highest of a list are its odd ones out (typos, foreign entries, junk lines).
"""

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from .data import Vocab, chunk_bounds
from .losses import widened
from .models import kind_of

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
                losses = _losses(model, vocab, words[i:j], None if labels is None else labels[i:j]).tolist()
            yield from losses
    finally:
        model.train(was_training)


def _losses(model, vocab: Vocab, words: list[str], labels: torch.Tensor | None) -> torch.Tensor:
    """The mean loss of each of `words`, (B,), on the CPU, in the model's own batch layout."""
    device = next(model.parameters()).device
    layout = kind_of(model).layout
    inputs, targets, owner, labels = layout.batch_of(words, vocab, model.block_size, labels)  # owner: targets' shape
    labels = None if labels is None else labels.to(device)
    logits, _ = model(inputs.to(device), targets.to(device), labels=labels)  # (*targets.shape, vocab)
    losses = F.cross_entropy(
        widened(logits.flatten(0, -2)), targets.flatten().to(device), ignore_index=-1, reduction="none"
    ).cpu()
    totals = torch.zeros(len(words), dtype=losses.dtype).index_add_(0, owner.flatten(), losses)  # (B,): padding adds 0
    return totals / torch.tensor([len(w) + 1 for w in words])  # every character and the end token
