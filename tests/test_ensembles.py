"""Ensembles trained in one command (ensembles.py): `train --members N`, one run per member, one at a
time or several at once, each resumable, then saved as one model; Ctrl-C, a replaced ensemble, and
the mistakes a user can make with them."""

import json
import os
import signal
import subprocess
import sys
import time
import types

import pytest
import torch

from wavenet_names import (
    ensembles,
    presets,
    processes,
    runs,
)
from wavenet_names.checkpoint import load_checkpoint, load_model
from wavenet_names.cli import main
from wavenet_names.configuration import settings
from wavenet_names.ensemble import Ensemble
from wavenet_names.fitting import TrainingInterrupted, fit
from wavenet_names.models import batches_for
from wavenet_names.options import OptionError
from wavenet_names.splits import Splits
from wavenet_names.training import Trainer
from wavenet_names.words import read_words

from helpers import TINY, ended, mixture_loss

MEMBERS = ["--members", "2", "--steps", "12", "--eval-every", "6", *TINY]


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def ensembled(tmp_path_factory, small_data_file):
    """`train --members 2` on the small file, and the single run of its first member's seed."""
    root = tmp_path_factory.mktemp("members")
    data = ["--data", str(small_data_file)]
    assert main(["train", *data, "--out", str(root / "ensemble"), *MEMBERS, "--report-test"]) == 0
    assert main(["train", *data, "--out", str(root / "single"), *MEMBERS[2:]]) == 0  # seed 42 alone
    return root


def test_train_members_saves_its_models_as_one_ensemble(ensembled, small_data_file, capsys):
    out = ensembled / "ensemble"
    model, vocab, checkpoint = load_model(out / "model.pt")
    assert isinstance(model, Ensemble) and len(model.members) == 2
    for member, i in zip(model.members, (1, 2), strict=True):  # each member's best model, as its run saved it
        assert states_equal(member.state_dict(), load_model(out / f"member-{i}" / "model.pt")[0].state_dict())
    # member 1 is the run that the same options train alone; member 2 trains from seed + 1000
    assert states_equal(model.members[0].state_dict(), load_model(ensembled / "single" / "model.pt")[0].state_dict())
    assert not states_equal(model.members[0].state_dict(), model.members[1].state_dict())
    metrics = json.loads((out / "metrics.json").read_text())
    assert [m["seed"] for m in metrics["members"]] == [42, 1042]
    assert metrics["seconds"] == pytest.approx(sum(m["seconds"] for m in metrics["members"]), abs=0.02)
    # its losses are the mixture's, of the members' probabilities; the test split once, of the ensemble only
    val = batches_for(model.members[0], Splits.from_words(small_data_file.read_text().split(), vocab), "val")
    inputs, targets, _ = next(val.chunks(10_000))
    assert metrics["val_loss"] == pytest.approx(mixture_loss(model.members, inputs, targets), abs=1e-5)
    assert metrics["val_loss"] < sum(m["val_loss"] for m in metrics["members"]) / 2
    # metrics.jsonl: the first k members as one ensemble, k = 1, 2, against their training time
    growth = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["members"] for r in growth] == [1, 2]
    assert growth[0]["val_loss"] == pytest.approx(metrics["members"][0]["val_loss"], abs=1e-5)
    assert growth[0]["seconds"] == metrics["members"][0]["seconds"] and growth[1]["seconds"] == metrics["seconds"]
    assert growth[1]["val_loss"] == metrics["val_loss"]
    assert "test_loss" in metrics
    assert not any("test_loss" in json.loads((out / f"member-{i}" / "metrics.json").read_text()) for i in (1, 2))
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out / "model.pt")]) == 0
    assert float(capsys.readouterr().out.split()[1]) == pytest.approx(metrics["val_loss"], abs=1e-4)
    # with another checkpoint, the ensemble's models join it one by one, each of the three weighing a third
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(out / "model.pt"),
                "--checkpoint",
                str(ensembled / "single" / "model.pt"),
            ]
        )
        == 0
    )
    three = [*model.members, model.members[0]]
    assert float(capsys.readouterr().out.split()[1]) == pytest.approx(mixture_loss(three, inputs, targets), abs=1e-4)
    assert main(["sample", "--checkpoint", str(out / "model.pt"), "-n", "4", "--seed", "0"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4


def ensemble_configs(small_data_file, **options):
    splits = Splits.from_words(read_words(small_data_file))
    options = {
        "data": str(small_data_file),
        "n_embd": 8,
        "n_hidden": 16,
        "n_layers": 2,
        "batch_size": 16,
        "members": 2,
        "steps": 12,
        "eval_every": 6,
        **options,
    }
    return (*settings(options, splits.facts), splits)


def stopping_at(seed: int, step: int):
    """A runner that stops (as Ctrl-C does) the member of `seed` at `step`, and trains the others."""

    def runner(trainer, out, **cli_options):
        fit(trainer, out, should_stop=lambda: trainer.config.seed == seed and trainer.step >= step)

    return runner


def test_an_interrupted_ensemble_resumes_to_the_same_models(ensembled, small_data_file, tmp_path, capsys):
    out = tmp_path / "ensemble"
    model_config, config, splits = ensemble_configs(small_data_file)
    with pytest.raises(TrainingInterrupted):
        runs.run(model_config, config, splits, out, stopping_at(1042, 5))
    assert (out / "member-1" / "metrics.json").exists() and not (out / "model.pt").exists()
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--samples", "0"]) == 0  # no options: ensemble.json's
    printed = capsys.readouterr().out
    assert "member-2: seed 1042, from step 5" in printed and "member-1:" not in printed  # member 1 is done
    resumed, whole = load_model(out / "model.pt")[0], load_model(ensembled / "ensemble" / "model.pt")[0]
    assert states_equal(resumed.state_dict(), whole.state_dict())


def test_ctrl_c_in_an_ensemble_says_to_resume_the_ensemble(small_data_file, tmp_path, monkeypatch, capsys):
    import wavenet_names.cli as cli

    monkeypatch.setattr(cli, "run_member", stopping_at(1042, 3))  # as if Ctrl-C came in member 2
    out = tmp_path / "ensemble"
    assert main(["train", "--data", str(small_data_file), "--out", str(out), *MEMBERS]) == 130
    err = capsys.readouterr().err
    assert f"saved {out / 'member-2' / 'last.pt'}; continue with: wavenet-names train --out {out} --resume" in err


def test_a_replaced_ensemble_retrains_what_the_earlier_one_left(small_data_file, tmp_path):
    """--overwrite over an ensemble of other settings, cut short in member 1 and resumed: member 2's
    directory still holds the earlier ensemble's run, which is not read back but trained afresh."""
    out = tmp_path / "ensemble"
    model_config, config, splits = ensemble_configs(small_data_file)
    runs.run(model_config, config, splits, out, fit)
    _, other, _ = ensemble_configs(small_data_file, steps=6, eval_every=3)
    with pytest.raises(TrainingInterrupted):
        runs.run(model_config, other, splits, out, stopping_at(42, 2), fresh=True)
    metrics = runs.run(model_config, other, splits, out, fit)
    assert metrics["steps"] == 6 and all(m["best_step"] <= 6 for m in metrics["members"])
    assert json.loads((out / "member-2" / "metrics.json").read_text())["steps"] == 6


@pytest.mark.parametrize(
    "args, problem",
    [
        (["--resume", "--steps", "20"], "--steps cannot change when an ensemble resumes"),
        (["--resume", "--preset", "best"], "--resume continues the saved run; it takes no --preset"),
        (MEMBERS, "already holds a checkpoint"),
        (["--members", "0"], "--members must be at least 1, got 0"),
    ],
)
def test_ensemble_mistakes_are_one_line_and_change_nothing(args, problem, small_data_file, tmp_path, capsys):
    out = tmp_path / "ensemble"
    model_config, config, splits = ensemble_configs(small_data_file)
    with pytest.raises(TrainingInterrupted):
        runs.run(model_config, config, splits, out, stopping_at(1042, 5))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["train", "--data", str(small_data_file), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and problem in err, err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_an_ensemble_is_refused_under_torchrun(small_data_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it for each of its ranks
    assert main(["train", "--data", str(small_data_file), "--out", str(tmp_path / "e"), *MEMBERS]) == 2
    assert "in processes of its own; run it without torchrun" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_a_trainer_trains_one_model(small_data_file):
    model_config, config, splits = ensemble_configs(small_data_file)
    with pytest.raises(OptionError, match="a Trainer trains one model"):
        Trainer(model_config, config, splits)


def test_preset_max_is_an_ensemble_that_reports_its_test_loss_once(small_data_file, tmp_path, capsys):
    assert presets.TRAIN_PRESETS["max"].options["members"] > 1
    out = tmp_path / "max"  # two small members, one at a time, to be quick; every other option the preset's
    args = ["train", "--preset", "max", "--data", str(small_data_file), "--out", str(out), "--members", "2"]
    args += ["--members-at-once", "1"]  # (tested below: several at once train the same models)
    assert main([*args, "--steps", "4", "--eval-every", "2", *TINY]) == 0
    test_lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("test ")]
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(test_lines) == 1 and test_lines[0].startswith(f"test {metrics['test_loss']:.4f}")
    assert metrics["model"]["dropout"] == presets.TRAIN_PRESETS["max"].options["dropout"]
    assert len(metrics["members"]) == 2


@pytest.mark.slow  # starts processes
def test_members_at_once_train_the_models_one_at_a_time_trains(ensembled, small_data_file, tmp_path):
    out = tmp_path / "at-once"
    args = ["train", "--data", str(small_data_file), "--out", str(out), *MEMBERS, "--report-test"]
    assert main([*args, "--members-at-once", "2"]) == 0
    at_once, one_by_one = load_model(out / "model.pt")[0], load_model(ensembled / "ensemble" / "model.pt")[0]
    for name, value in one_by_one.state_dict().items():  # each process has one CPU thread: the sums may
        assert torch.allclose(at_once.state_dict()[name], value, atol=1e-5), name  # round otherwise
    metrics = json.loads((out / "metrics.json").read_text())
    assert [m["seed"] for m in metrics["members"]] == [42, 1042] and metrics["train_config"]["members_at_once"] == 2
    assert metrics["seconds"] == max(m["seconds"] for m in metrics["members"])  # side by side: the longer one


def test_the_time_of_members_at_once_is_their_schedule():
    """Four models of 3, 5, 4 and 1 s, two at a time: each starts when a place is free."""
    assert ensembles.finish_times([3.0, 5.0, 4.0, 1.0], 2) == [3.0, 5.0, 7.0, 6.0]
    assert ensembles.finish_times([3.0, 5.0, 4.0, 1.0], 1) == [3.0, 8.0, 12.0, 13.0]


@pytest.mark.parametrize("whole_group", [True, False])
@pytest.mark.slow  # starts processes
def test_ctrl_c_stops_members_at_once_and_resume_finishes_them(whole_group, small_data_file, tmp_path):
    """Ctrl-C on a terminal signals every process of the command (whole_group); `kill -INT` signals
    the command alone, which passes it on. Either way each member saves and stops, and --resume,
    which may train them at another pace, finishes the ensemble."""
    out = tmp_path / "ensemble"
    args = [
        "train",
        "--data",
        str(small_data_file),
        "--out",
        str(out),
        "--members",
        "2",
        "--members-at-once",
        "2",
        "--steps",
        "1200",  # a few seconds of training: the Ctrl-C comes well before either member ends
        "--eval-every",
        "10",
        *TINY,
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "wavenet_names", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 90
    while not all((out / f"member-{i}" / "last.pt").exists() for i in (1, 2)) and time.monotonic() < deadline:
        time.sleep(0.1)
    if whole_group:
        os.killpg(proc.pid, signal.SIGINT)
    else:
        os.kill(proc.pid, signal.SIGINT)
    _, err = ended(proc, 90)
    assert proc.returncode == 130, err
    assert f"continue with: wavenet-names train --out {out} --resume" in err and "Traceback" not in err, err
    steps = [load_checkpoint(out / f"member-{i}" / "last.pt")["step"] for i in (1, 2)]
    assert all(10 <= s < 1200 for s in steps), steps
    if whole_group:  # (the same resume after either signal: it is checked once)
        assert main(["train", "--out", str(out), "--resume", "--members-at-once", "1"]) == 0
        assert json.loads((out / "metrics.json").read_text())["steps"] == 1200


@pytest.mark.slow  # starts processes
def test_a_member_whose_process_died_is_an_error_not_a_wait():
    import queue

    dead = types.SimpleNamespace(exitcode=-9)  # killed: no result will ever come
    index, error = processes.next_result(queue.Queue(), {3: dead})
    assert index == 3 and isinstance(error, ChildProcessError) and "member 4" in str(error)
