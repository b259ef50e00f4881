"""A split as batches (batches.py): whole names or the lecture's windows, drawn from CPU-side facts
alone, each laid out as pad_batch lays it, in memory in proportion to the characters."""

import pytest
import torch

from wavenet_names import Vocab, encode_names, pad_batch
from wavenet_names.batches import NameBatches, WindowBatches


@pytest.mark.parametrize("world_size", [1, 3])
@pytest.mark.parametrize("kind", ["names", "windows"])
def test_a_batch_counts_its_positions_and_weighs_its_share(kind, world_size, words, vocab):
    """sample() counts a share's positions on the CPU: it must be the number of targets the loss averages,
    and the shares' weights (world_size * share / batch) must add up to world_size."""
    batches = NameBatches(words, vocab, 8) if kind == "names" else WindowBatches(words, vocab, 8)
    weights = []
    for rank in range(world_size):
        _, targets, positions, weight, *_ = batches.sample(10, torch.Generator().manual_seed(0), rank, world_size)
        assert positions == int((targets != -1).sum())
        weights.append(weight)
    assert sum(weights) == pytest.approx(world_size)


@pytest.mark.parametrize("kind", ["names", "windows"])
def test_drawing_a_batch_never_reads_the_device(kind, words, vocab):
    """On a GPU every read of a device value makes the host wait for the last step to finish, so a
    batch is drawn from CPU-side facts alone. 'meta' tensors have shapes and no values: a read fails."""
    cls = NameBatches if kind == "names" else WindowBatches
    on_cpu, on_meta = cls(words, vocab, 8), cls(words, vocab, 8, device="meta")
    for rank in range(2):
        expected = on_cpu.sample(10, torch.Generator().manual_seed(0), rank, 2)
        inputs, targets, positions, weight, *_ = on_meta.sample(10, torch.Generator().manual_seed(0), rank, 2)
        assert inputs.is_meta and inputs.shape == expected[0].shape and targets.shape == expected[1].shape
        assert (positions, weight) == expected[2:4]
    chunks = list(on_meta.chunks(7))
    assert [c[0].shape for c in chunks] == [c[0].shape for c in on_cpu.chunks(7)]


def test_a_batch_of_names_is_the_layout_of_those_names(words, vocab):
    """NameBatches keeps the names end to end and lays out each batch itself: it must give exactly
    what pad_batch gives for the same names, sampled or in evaluation chunks."""
    batches = NameBatches(words, vocab, 8)
    ix = torch.randint(0, len(words), (10,), generator=torch.Generator().manual_seed(0))
    idx, targets, *_ = batches.sample(10, torch.Generator().manual_seed(0))
    expected = pad_batch(*encode_names([words[i] for i in ix], vocab), 8)
    assert torch.equal(idx, expected[0]) and torch.equal(targets, expected[1])
    by_length = sorted(words, key=len)  # the chunks' order: shortest first
    for idx, targets, _ in batches.chunks(7):
        n = len(idx)
        expected = pad_batch(*encode_names(by_length[:n], vocab), 8)
        assert torch.equal(idx, expected[0]) and torch.equal(targets, expected[1])
        by_length = by_length[n:]
    assert not by_length  # every name once


def test_one_long_item_costs_its_own_length_not_the_splits(vocab):
    """A word list with one outlier (a pasted paragraph among product names) must not cost memory
    as if every item were that long: 2,000 names and one of 100,000 characters would take 1.6 GB as
    a right-padded matrix. Evaluation chunks shrink around a long item instead of padding to it."""
    words = ["emma", "olivia", "ava"] * 667 + ["x" * 100_000]
    batches = NameBatches(words, Vocab.from_words(words), 8)
    n_chars = sum(map(len, words))
    held = sum(t.numel() for t in vars(batches).values() if isinstance(t, torch.Tensor))
    assert held <= n_chars + 4 * len(words)  # the characters, and a few numbers per item
    budget = 64 * NameBatches.CHUNK_POSITIONS_PER_NAME
    chunks = list(batches.chunks(64))
    assert all(t.numel() <= max(budget, 100_001) for _, t, _ in chunks)  # a chunk of one may exceed the budget
    assert chunks[-1][1].shape == (1, 100_001)  # the long item, alone
    assert sum(int((t != -1).sum()) for _, t, _ in chunks) == batches.n_examples
