"""Scoring: each item's loss per character, for every kind of model, whatever its neighbours."""

import pytest
import torch
import torch.nn.functional as F

from wavenet_names import ConvWaveNet, FlatMLP, HierarchicalMLP, encode_names, pad_batch, tree_from_conv, windows
from wavenet_names.data import NameBatches, chunk_bounds
from wavenet_names.scoring import score
from wavenet_names.training import evaluate


def trained_a_little(model, words, vocab):
    """A few training-mode steps, so BatchNorm's running statistics are not the identity's."""
    model.train()
    for _ in range(3):
        if isinstance(model, ConvWaveNet):
            model(*pad_batch(*encode_names(words, vocab), model.block_size))
        else:
            model(windows(words, vocab, model.block_size)[0])
    return model


def alone(model, vocab, word) -> float:
    """The item's mean loss, run through the model by itself, with nothing around it."""
    with torch.no_grad():
        if isinstance(model, ConvWaveNet):
            return float(model(*pad_batch(*encode_names([word], vocab), model.block_size))[1])
        X, Y = windows([word], vocab, model.block_size)
        return float(F.cross_entropy(model(X)[0], Y))


@pytest.mark.parametrize(
    "make",
    [
        lambda v: ConvWaveNet(v, 8, 16, 3),
        lambda v: HierarchicalMLP(v, 8, 16, 3),
        lambda v: FlatMLP(v, 8, 16, 3),
    ],
    ids=["conv", "hierarchical", "flat"],
)
def test_each_item_scores_as_it_would_alone(make, words, vocab):
    """A batch of items of every length, the longest of the data set among them: each score is the
    item's loss run on its own, and the model is left in the mode it was in."""
    model = trained_a_little(make(len(vocab)), words, vocab)
    scores = score(model, vocab, words)
    assert model.training
    model.eval()
    assert scores == pytest.approx([alone(model, vocab, w) for w in words], rel=1e-5)


def test_scores_weighted_by_length_are_the_evaluate_loss(words, vocab):
    model = trained_a_little(ConvWaveNet(len(vocab), 8, 16, 3), words, vocab)
    scores = torch.tensor(score(model, vocab, words), dtype=torch.float64)
    weights = torch.tensor([len(w) + 1 for w in words], dtype=torch.float64)
    expected = evaluate(model, NameBatches(words, vocab, model.block_size))
    assert float((scores * weights).sum() / weights.sum()) == pytest.approx(expected, rel=1e-6)


def test_the_conv_model_and_its_tree_score_alike(words, vocab):
    """The project's equivalence, item by item: the two views of the data give the same scores."""
    conv = trained_a_little(ConvWaveNet(len(vocab), 8, 16, 3).double(), words, vocab)
    tree = tree_from_conv(conv)
    assert score(conv, vocab, words) == pytest.approx(score(tree, vocab, words), rel=1e-9)


def test_chunks_shrink_around_a_long_item():
    """In order, at most max_items items, and padded positions (longest + 1, times the items) within
    max_positions, except for an item too long to share: it is a chunk of its own."""
    lengths = [3, 3, 3, 10_000, 3, 3, 3, 3, 3]
    assert list(chunk_bounds(lengths, 3, 40)) == [(0, 3), (3, 4), (4, 7), (7, 9)]
    assert list(chunk_bounds(lengths, 100, 40)) == [(0, 3), (3, 4), (4, 9)]
    assert list(chunk_bounds([30, 3, 3], 100, 40)) == [(0, 1), (1, 3)]  # 2 x (30 + 1) > 40
    assert list(chunk_bounds([], 5, 40)) == []


def test_scores_stream_a_chunk_at_a_time_and_leave_grad_mode_alone(words, vocab, monkeypatch):
    """The first scores come before the last chunk is run (the CLI prints them as they come), and
    between chunks the caller's code runs with gradients on, as it was."""
    import wavenet_names.scoring as scoring

    model = trained_a_little(ConvWaveNet(len(vocab), 8, 16, 3), words, vocab)
    expected = score(model, vocab, words)
    chunks, losses = [], scoring._losses
    monkeypatch.setattr(scoring, "CHUNK_ITEMS", 5)
    monkeypatch.setattr(
        scoring,
        "_losses",
        lambda model, vocab, chunk, labels: chunks.append(chunk) or losses(model, vocab, chunk, labels),
    )
    stream = scoring.stream_scores(model, vocab, words)
    assert next(stream) == pytest.approx(expected[0])
    assert len(chunks) == 1 and torch.is_grad_enabled() and not model.training
    assert [next(stream) for _ in range(4)] + list(stream) == pytest.approx(expected[1:])
    assert len(chunks) == 10 and model.training  # 48 items in chunks of 5
