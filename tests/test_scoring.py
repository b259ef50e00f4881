"""Scoring: each item's loss per character, for every kind of model, whatever its neighbours."""

import io
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from wavenet_names import (
    ConvWaveNet,
    FlatMLP,
    HierarchicalMLP,
    encode_names,
    pad_batch,
    tree_from_conv,
    windows,
)
from wavenet_names.batches import NameBatches, chunk_bounds
from wavenet_names.checkpoint import load_model
from wavenet_names.cli import main
from wavenet_names.scoring import evaluate, score
from wavenet_names.splits import Splits
from wavenet_names.words import read_words

from helpers import HostReads, ended, one_error


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
    chunks, losses = [], scoring.item_losses
    monkeypatch.setattr(scoring, "CHUNK_ITEMS", 5)
    monkeypatch.setattr(
        scoring,
        "item_losses",
        lambda model, vocab, chunk, labels: chunks.append(chunk) or losses(model, vocab, chunk, labels),
    )
    stream = scoring.stream_scores(model, vocab, words)
    assert next(stream) == pytest.approx(expected[0])
    assert len(chunks) == 1 and torch.is_grad_enabled() and not model.training
    assert [next(stream) for _ in range(4)] + list(stream) == pytest.approx(expected[1:])
    assert len(chunks) == 10 and model.training  # 48 items in chunks of 5


def test_evaluation_reads_the_device_once_per_chunk_and_once_for_the_loss(words, vocab):
    """Each chunk's forward reads its layout once; the losses are summed on the device. (The chunks
    are cut beforehand: cutting them reads the lengths, which live on the CPU whatever the device.)"""
    model = ConvWaveNet(len(vocab), 8, 16, 3)
    batches = NameBatches(words, vocab, model.block_size)
    chunks = list(batches.chunks(15))  # 4 chunks of the 48 names: 15, 15, 15 and 3
    split = SimpleNamespace(chunks=lambda size: chunks, n_examples=batches.n_examples)
    with HostReads() as counter:
        loss = evaluate(model, split)
    assert counter.reads == ["tolist"] * 4 + ["__float__"], counter.reads
    idx, targets = pad_batch(*encode_names(words, vocab), model.block_size)
    with torch.no_grad():
        whole = model.eval()(idx, targets)[1]  # the mean over every example at once
    assert loss == pytest.approx(float(whole), rel=1e-6)


def test_evaluate_refuses_a_split_of_data_that_has_changed(trained, small_data_file, tmp_path, capsys):
    """Reordered, the same names split otherwise: its "val" would hold training names, and score better."""
    reordered = tmp_path / "reordered.txt"
    reordered.write_text("\n".join(reversed(small_data_file.read_text().split())) + "\n")
    assert main(["evaluate", "--checkpoint", str(trained), "--data", str(reordered), "--split", "val"]) == 2
    assert "not the data this model was trained on" in one_error(capsys)
    assert main(["evaluate", "--checkpoint", str(trained), "--data", str(reordered), "--split", "all"]) == 0
    assert capsys.readouterr().out.startswith("all ")
    assert main(["evaluate", "--checkpoint", str(trained), "--split", "val"]) == 0  # its own data, unchanged


def test_evaluate_prints_split_and_loss(trained, small_data_file, capsys):
    assert main(["evaluate", "--checkpoint", str(trained / "model.pt")]) == 0
    split, loss = capsys.readouterr().out.split()
    assert split == "val"
    assert float(loss) == pytest.approx(json.loads((trained / "metrics.json").read_text())["val_loss"], abs=1e-4)
    losses = {}
    for split in ("train", "val", "test", "all"):
        assert main(["evaluate", "--checkpoint", str(trained / "model.pt"), "--split", split]) == 0
        name, loss = capsys.readouterr().out.split()
        assert name == split
        losses[split] = float(loss)
    splits = Splits.from_words(read_words(small_data_file))
    examples = {split: sum(len(w) + 1 for w in getattr(splits, split)) for split in ("train", "val", "test")}
    mean = sum(losses[split] * n for split, n in examples.items()) / sum(examples.values())  # per character
    assert losses["all"] == pytest.approx(mean, abs=1e-4)  # each printed to 4 decimals


def test_score_prints_each_items_loss_in_order_from_a_file_or_standard_input(trained, tmp_path, capsys, monkeypatch):
    checkpoint = str(trained / "model.pt")
    items = ["emma", "zzxqj", "olivia"]
    path = tmp_path / "mine.txt"
    path.write_text("\n".join(items) + "\n\n")  # a blank line is no item
    assert main(["score", str(path), "--checkpoint", checkpoint]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[1] for line in lines] == items
    model, vocab, _ = load_model(checkpoint)
    expected = [f"{loss:.4f}\t{item}" for item, loss in zip(items, score(model, vocab, items), strict=True)]
    assert lines == expected
    for stdin in ("emma\nzzxqj\nolivia\n", "emma\nJoe\n"):  # piped in: not a terminal
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode())))
        status = main(["score", "--checkpoint", checkpoint])
        out, err = capsys.readouterr()
        if "Joe" not in stdin:
            assert (status, out.splitlines(), err) == (0, expected, "")
    assert status == 2 and out == ""
    assert err.strip().splitlines() == [
        "wavenet-names score: error: standard input: items with a character the model does not know: 1 of 2, "
        "the first 'Joe' ('J'); pass --lowercase or --skip-unknown"
    ]
    # `Anna` with a capital A aborted a whole score: lowercase it, or skip it and say so
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"Emma\nzzxqj\nOlivia\n")))
    assert main(["score", "--checkpoint", checkpoint, "--lowercase"]) == 0
    assert capsys.readouterr() == ("\n".join(expected) + "\n", "")
    path.write_text("emma\nJoe\nolivia\nzoë\n")
    assert main(["score", str(path), "--checkpoint", checkpoint, "--skip-unknown"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [expected[0], expected[2]]
    assert err == "skipped 2 of 4 items: a character the model does not know\n"


@pytest.mark.slow  # starts processes
def test_score_typed_at_a_terminal_says_how_to_end(trained):
    """Without a file and with a terminal as standard input, score waits for lines: it says so, and
    Ctrl-D (end of input) scores what was typed."""
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "wavenet_names", "score", "--checkpoint", str(trained / "model.pt")],
        stdin=follower,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(follower)
    try:
        os.write(leader, b"emma\n\x04")  # a line, then Ctrl-D at the start of the next
        out, err = ended(proc, 60)
    finally:
        proc.kill()
        os.close(leader)
    assert proc.returncode == 0, err
    assert "end with Ctrl-D" in err
    assert out.split("\t")[1] == "emma\n"


def test_evaluate_all_of_a_held_out_file(trained, small_data_file, tmp_path, capsys):
    held_out = tmp_path / "held_out.txt"
    words = read_words(small_data_file)[-10:]
    held_out.write_text("\n".join(words) + "\n")
    assert main(["evaluate", "--checkpoint", str(trained / "model.pt"), "--data", str(held_out), "--split", "all"]) == 0
    model, _, _ = load_model(trained / "model.pt")
    expected = evaluate(
        model, NameBatches(words, Splits.from_words(read_words(small_data_file)).vocab, model.block_size)
    )
    assert capsys.readouterr().out == f"all {expected:.4f}\n"  # every one of the 10, not the lecture's split of them
