"""Self-contained checkpoints (checkpoint.py): written whole or not at all, refused in one line when
they are not ours, and read by every later version: the checkpoints in tests/before/ were written
before each kind owned its options and its module, one per kind, a labelled conv, a conv of full
WaveNet blocks and an ensemble; each still loads, samples the names it sampled then and scores the
items as it scored them."""

import argparse
import json
import os
import stat
from pathlib import Path

import pytest
import torch

from wavenet_names.checkpoint import FORMAT, label_columns, load_checkpoint, load_model, save_checkpoint
from wavenet_names.choosing import SampleConfig
from wavenet_names.cli import main
from wavenet_names.sampling import generate
from wavenet_names.scoring import score

from helpers import one_error

BEFORE = Path(__file__).parent / "before"
RECORD = json.loads((BEFORE / "samples.json").read_text())


@pytest.mark.parametrize("name", list(RECORD))
def test_a_checkpoint_written_before_samples_and_scores_as_it_did(name):
    record = RECORD[name]
    model, vocab, checkpoint = load_model(BEFORE / f"{name}.pt")
    columns = label_columns(checkpoint)
    labels = torch.from_numpy(columns.parse(record["labels"])) if columns else None
    assert generate(model, vocab, SampleConfig(n=8, seed=0, cut_at=20), labels=labels) == record["names"]
    assert score(model, vocab, record["scored"]) == pytest.approx(record["scores"], abs=1e-6)


@pytest.mark.parametrize("name", ["conv-labelled", "transformer", "ensemble"])
def test_sample_prints_the_names_a_checkpoint_written_before_sampled(name, capsys):
    labels = [item for label in RECORD[name]["labels"] for item in ("--label", label)]
    args = ["sample", "--checkpoint", str(BEFORE / f"{name}.pt"), "-n", "8", "--seed", "0", "--cut-at", "20"]
    assert main([*args, *labels]) == 0
    printed = [
        line.split("  (cut at")[0].removesuffix(" *").removesuffix(" +")
        for line in capsys.readouterr().out.splitlines()
    ]
    assert printed == [drawn or "(empty)" for drawn in RECORD[name]["names"]]


def test_truncated_and_foreign_checkpoints(trained, tmp_path, capsys):
    content = (trained / "model.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(content[: len(content) // 2])
    assert main(["sample", "--checkpoint", str(truncated)]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err
    future = tmp_path / "future.pt"
    checkpoint = load_checkpoint(trained / "model.pt")
    checkpoint.pop("format")
    torch.save({**checkpoint, "format": "wavenet_names.checkpoint/99"}, future)
    assert main(["evaluate", "--checkpoint", str(future)]) == 2
    assert f"this version reads {FORMAT!r}" in capsys.readouterr().err
    pickled = tmp_path / "code.pt"
    torch.save({"format": FORMAT, "model": Path("x")}, pickled)  # an arbitrary object: refused unpickled
    assert main(["sample", "--checkpoint", str(pickled)]) == 2
    assert "not a wavenet_names checkpoint (it holds objects other than tensors" in capsys.readouterr().err


def test_a_failed_write_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    save_checkpoint({"step": 1}, path)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C in the middle of torch.save

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"step": 2}, path)
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left behind


def test_a_runs_directory_is_its_model(trained, tmp_path, capsys):
    assert main(["sample", "--checkpoint", str(trained / "model.pt"), "-n", "5", "--seed", "1"]) == 0
    from_file = capsys.readouterr().out
    assert main(["sample", "--checkpoint", str(trained), "-n", "5", "--seed", "1"]) == 0
    assert capsys.readouterr().out == from_file
    assert main(["sample", "--checkpoint", str(tmp_path)]) == 2
    assert f"{tmp_path}: a directory without a model.pt" in one_error(capsys)


def test_files_that_are_not_checkpoints_are_named_in_our_words(tmp_path, capsys):
    pickled = tmp_path / "other.pt"
    torch.save(argparse.Namespace(steps=3), pickled)  # a torch.save of something else: weights_only refuses it
    text = tmp_path / "names.txt"
    text.write_text("emma\nolivia\n")
    for path, said in [(pickled, "not a wavenet_names checkpoint"), (text, "not a readable checkpoint")]:
        assert main(["evaluate", "--checkpoint", str(path)]) == 2
        error = one_error(capsys)
        assert f"{path}: {said}" in error and "\x1b" not in error and "pop from" not in error, error


def test_checkpoints_follow_the_umask_as_every_other_file(trained):
    umask = os.umask(0)
    os.umask(umask)
    for name in ("model.pt", "last.pt", "metrics.json"):
        assert stat.S_IMODE((trained / name).stat().st_mode) == 0o666 & ~umask, name
