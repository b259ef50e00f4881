"""What a new user trips over: a model's directory given as its checkpoint, a changed data file, files
that are not checkpoints, an --out that cannot be, and the first `sample`
before any `train`. Each is one line in the program's words and exit 2, or does what was meant."""

import argparse
import json
import os
import stat
import sys

import pytest
import torch

from wavenet_names import __version__
from wavenet_names.checkpoint import load_checkpoint
from wavenet_names.cli import main
from wavenet_names.devices import resolve_device
from wavenet_names.logs import SCALARS
from wavenet_names.options import OptionError
from wavenet_names.sampling import Seen
from wavenet_names.training import Splits

TINY = ["--n-embd", "8", "--n-hidden", "16", "--n-layers", "2", "--batch-size", "16", "--samples", "0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_data_file):
    """A run of 10 steps on conftest's small data file; tests must not modify it."""
    out = tmp_path_factory.mktemp("run")
    args = ["--data", str(small_data_file), "--out", str(out), "--steps", "10", "--eval-every", "5"]
    assert main(["train", *args, *TINY]) == 0
    return out


def one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


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


def test_an_out_that_cannot_be_made_is_one_line_without_errno(small_data_file, capsys):
    assert main(["train", "--data", str(small_data_file), "--out", "/proc/nope", "--steps", "2", *TINY]) == 2
    error = one_error(capsys)
    assert "/proc/nope" in error and "[Errno" not in error, error


def test_checkpoints_follow_the_umask_as_every_other_file(trained):
    umask = os.umask(0)
    os.umask(umask)
    for name in ("model.pt", "last.pt", "metrics.json"):
        assert stat.S_IMODE((trained / name).stat().st_mode) == 0o666 & ~umask, name


def test_evaluate_refuses_a_split_of_data_that_has_changed(trained, small_data_file, tmp_path, capsys):
    """Reordered, the same names split otherwise: its "val" would hold training names, and score better."""
    reordered = tmp_path / "reordered.txt"
    reordered.write_text("\n".join(reversed(small_data_file.read_text().split())) + "\n")
    assert main(["evaluate", "--checkpoint", str(trained), "--data", str(reordered), "--split", "val"]) == 2
    assert "not the data this model was trained on" in one_error(capsys)
    assert main(["evaluate", "--checkpoint", str(trained), "--data", str(reordered), "--split", "all"]) == 0
    assert capsys.readouterr().out.startswith("all ")
    assert main(["evaluate", "--checkpoint", str(trained), "--split", "val"]) == 0  # its own data, unchanged


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"wavenet-names {__version__}"


def test_cut_at_counts_the_prefix_and_a_name_cut_there_is_marked(trained, capsys):
    """--prefix abcdefghij with a limit of 3 gave 'abcdefghijoug'; a name cut at the limit could get a *."""
    assert main(["sample", "--checkpoint", str(trained), "--prefix", "abcdefghij", "--cut-at", "3"]) == 2
    assert "--prefix has 10 characters, more than --cut-at 3" in one_error(capsys)
    assert (
        main(["sample", "--checkpoint", str(trained), "-n", "200", "--seed", "0", "--prefix", "ka", "--cut-at", "4"])
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    cut = [line for line in lines if line.endswith("  (cut at --cut-at 4)")]
    ended = [line.removesuffix(" *") for line in lines if line not in cut]
    assert cut and ended  # an untrained model ends some names within 4 characters, not all
    assert all(len(line.split()[0]) == 4 and "*" not in line for line in cut)
    assert all(name.startswith("ka") and len(name) <= 4 for name in ended)


def test_an_option_a_kind_does_not_read_is_refused(small_data_file, tmp_path, capsys):
    """--model flat --n-layers 4 trained the block-3 model: flat's context is --block-size."""
    args = ["train", "--data", str(small_data_file), "--out", str(tmp_path), "--model", "flat", "--steps", "2"]
    assert main([*args, "--n-layers", "4"]) == 2
    assert "--n-layers does not apply to the flat model" in one_error(capsys)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "name, said",
    [
        ("cuda:1", "--device cuda:1: cuda is not available on this machine; use cpu"),
        ("mps", "--device mps: mps is not available on this machine; use cpu"),
        ("meta", "--device meta: a run takes cpu, cuda, mps, xpu, not meta"),
        ("gpu", "--device 'gpu' is not a device"),
    ],
)
def test_device_takes_any_torch_device_string(name, said, small_data_file, tmp_path, capsys, monkeypatch):
    """--device took only auto, cpu and cuda; cuda:1 and mps are torch's names for a second GPU and
    Apple's. On this machine (no GPU) each is refused in one line; as a machine with one GPU sees them:"""
    assert main(["train", "--data", str(small_data_file), "--out", str(tmp_path), "--device", name]) == 2
    assert said in one_error(capsys)
    assert main(["evaluate", "--checkpoint", "nowhere.pt", "--device", name]) == 2  # evaluate and score alike
    assert said in one_error(capsys)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(OptionError, match="cuda:1: this machine has 1 device of type cuda, numbered from 0"):
        resolve_device("cuda:1")
    assert resolve_device("cuda:0") == torch.device("cuda", 0) and resolve_device("cpu") == torch.device("cpu")


def test_trains_last_lines_say_what_each_figure_is_and_every_file_written(small_data_file, tmp_path, capsys):
    """The final train figure is model.pt's over the whole split, not the step line's running mean;
    last.pt and metrics.jsonl were written but not listed."""
    args = ["--data", str(small_data_file), "--out", str(tmp_path), "--steps", "4", "--eval-every", "2"]
    assert main(["train", *args, *TINY]) == 0
    lines = capsys.readouterr().out.splitlines()
    steps = [line for line in lines if line.startswith("step ")]
    best, wrote = lines[len(steps)], lines[len(steps) + 1]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert best.startswith(
        f"best model (step {metrics['best_step']}): train {metrics['train_loss']:.4f}  "
        f"val {metrics['val_loss']:.4f}  over the whole splits  ("
    )
    listed = [name.split(" (")[0] for name in wrote.removeprefix("wrote ").split(", ")]
    assert sorted(listed) == sorted(str(path) for path in tmp_path.iterdir())  # every file, and no other


def test_samples_are_marked_training_held_out_or_new(trained, small_data_file):
    """72 of 1,384 "new" samples were names of val or test: the checkpoint now holds those too."""
    splits = Splits.read(small_data_file)
    seen = Seen.of_checkpoint(load_checkpoint(trained / "model.pt"))
    assert seen == Seen(frozenset(splits.train), frozenset(splits.val + splits.test)) == splits.seen
    train, val, test = splits.train[0], splits.val[0], splits.test[0]
    assert [seen.mark(name) for name in (train, val, test, "zzqx")] == [" *", " +", " +", ""]
    earlier = {"train_words": "\n".join(splits.train)}  # an earlier version's checkpoint: no held-out words
    assert Seen.of_checkpoint(earlier).mark(val) == "" and Seen.of_checkpoint(earlier).mark(train) == " *"


def test_a_run_stopped_early_says_where_and_why(small_data_file, tmp_path, capsys):
    args = ["--data", str(small_data_file), "--out", str(tmp_path), "--steps", "100", "--max-time", "1e-6"]
    assert main(["train", *args, *TINY]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [lines[0], "stopped at step 1 of 100: its --max-time of 1e-06 s of training is spent"]
    assert lines[0].startswith("step       1  train ") and lines[2].startswith("best model (step 1): ")


def test_samples_at_each_evaluation_leave_the_run_as_it_was(small_data_file, tmp_path, capsys):
    args = ["train", "--data", str(small_data_file), "--steps", "4", "--eval-every", "2", "--dropout", "0.2", *TINY]
    assert main([*args, "--out", str(tmp_path / "quiet")]) == 0
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "shown"), "--eval-samples", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    shown = [line for line in lines if line.startswith("  samples: ")]
    assert len(shown) == 2 and all(len(line.split(", ")) == 3 for line in shown)
    assert lines.index(shown[0]) == 1  # after its evaluation's line
    quiet, loud = (load_checkpoint(tmp_path / name / "last.pt") for name in ("quiet", "shown"))
    assert torch.equal(quiet["train_losses"], loud["train_losses"])  # dropout drew the same numbers
    assert all(torch.equal(quiet["model"][k], loud["model"][k]) for k in quiet["model"])


def test_tensorboard_logs_every_evaluation_as_metrics_jsonl_has_it(small_data_file, tmp_path, capsys, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = ["train", "--data", str(small_data_file), "--out", str(tmp_path / "run"), "--steps", "4"]
    assert main([*args, "--eval-every", "2", "--tensorboard", str(tmp_path / "tb"), *TINY]) == 0
    assert f"for TensorBoard in {tmp_path / 'tb'}" in capsys.readouterr().out
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    assert sorted(events.Tags()["scalars"]) == sorted(SCALARS)
    for tag, key in SCALARS.items():
        logged = [(e.step, e.value) for e in events.Scalars(tag)]
        assert logged == [(r["step"], pytest.approx(r[key], rel=1e-6)) for r in records], tag
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as without the tensorboard extra
    assert main([*args, "--overwrite", "--tensorboard", str(tmp_path / "tb2"), *TINY]) == 2
    assert "--tensorboard needs the tensorboard package: pip install" in one_error(capsys)
    assert not (tmp_path / "tb2").exists()
    assert [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()] == records
