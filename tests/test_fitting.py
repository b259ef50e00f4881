"""The training loop (fitting.py): Ctrl-C then --resume equals one run, for every kind; early stops
(--patience, --max-time) with an evaluation where they stop; and what it writes, when."""

import json

import pytest
import torch

from wavenet_names import fitting
from wavenet_names.checkpoint import load_checkpoint
from wavenet_names.fitting import TrainingInterrupted, finish, fit
from wavenet_names.splits import Splits
from wavenet_names.training import Trainer

from helpers import small_run, step_clock


@pytest.fixture
def splits(all_words):
    return Splits.from_words(all_words[:400])


@pytest.mark.parametrize(
    "kind, optimizer",
    [("conv", "adamw"), ("hierarchical", "sgd"), ("flat", "sgd"), ("transformer", "adamw"), ("gru", "adamw")],
)
def test_interrupt_then_resume_equals_one_run(splits, tmp_path, kind, optimizer):
    whole = small_run(splits, kind, optimizer=optimizer)
    fit(whole, tmp_path / "whole")

    first = small_run(splits, kind, optimizer=optimizer)
    with pytest.raises(TrainingInterrupted) as stopped:
        fit(first, tmp_path / "split", should_stop=lambda: first.step == 12)  # Ctrl-C after step 12
    assert stopped.value.step == 12
    checkpoint = load_checkpoint(tmp_path / "split" / "last.pt")
    assert checkpoint["step"] == 12
    resumed = Trainer.from_checkpoint(checkpoint, splits, torch.device("cpu"))
    fit(resumed, tmp_path / "split")

    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert resumed.train_losses == pytest.approx(whole.train_losses, abs=0)
    assert len(resumed.train_losses) == 30


def test_patience_stops_when_val_has_not_improved_for_that_many_evaluations(splits, tmp_path, monkeypatch):
    """A small list over-trains: its best val came at step 500 and rose after. Here the validation
    losses are given, so that when it stops is known."""
    val_losses = iter([3.0, 2.0, 2.5, 2.0, 1.0])  # the best at the 2nd evaluation; the 4th only equals it
    monkeypatch.setattr(fitting, "evaluate", lambda model, batches: next(val_losses, 0.5))
    trainer = small_run(splits, eval_every=1, patience=2)
    fit(trainer, tmp_path)
    assert trainer.step == 4 and [r["step"] for r in trainer.history] == [1, 2, 3, 4]
    assert trainer.stopped == "val has not improved for 2 evaluations, since step 2 (--patience)"
    assert load_checkpoint(tmp_path / "model.pt")["step"] == 2 and load_checkpoint(tmp_path / "last.pt")["step"] == 4
    assert finish(trainer, tmp_path)[0]["stopped"] == trainer.stopped


def test_max_time_stops_at_that_much_training_and_evaluates_there(splits, tmp_path, monkeypatch):
    """--max-time counts training time over resumed sessions alike: a clock here that moves 1 s a step."""
    timed = step_clock(monkeypatch, 1.0)

    trainer = timed(small_run(splits, max_time=5.5))  # evaluations every 7 steps
    fit(trainer, tmp_path)
    assert trainer.step == 6 and [r["step"] for r in trainer.history] == [6]  # evaluated where it stopped
    assert trainer.stopped == "its --max-time of 5.5 s of training is spent" and trainer.seconds == 6.0
    for max_time, steps, evaluations in [(5.5, 6, [6]), (8.5, 9, [6, 7, 9])]:  # resumed: the same limit, then more
        checkpoint = load_checkpoint(tmp_path / "last.pt")
        resumed = timed(Trainer.from_checkpoint(checkpoint, splits, torch.device("cpu"), {"max_time": max_time}))
        fit(resumed, tmp_path)
        assert resumed.step == steps and [r["step"] for r in resumed.history] == evaluations


def test_checkpoints_and_metrics(splits, tmp_path):
    trainer = small_run(splits)
    fit(trainer, tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [7, 14, 21, 28, 30]
    best = load_checkpoint(tmp_path / "model.pt")
    assert best["best_val_loss"] == min(r["val_loss"] for r in records)
    assert best["step"] == min(records, key=lambda r: r["val_loss"])["step"]
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 30
    assert records[-1]["val_loss"] < records[0]["val_loss"] + 0.5  # sane, not diverged


def test_a_new_run_replaces_an_earlier_runs_metrics_at_its_first_evaluation(splits, tmp_path):
    """train --overwrite: the earlier run's figures stay until the new run has its own, then go."""
    fit(small_run(splits, steps=14), tmp_path)
    (tmp_path / "metrics.json").write_text("{}")  # as finish() leaves it
    again = small_run(splits, steps=10, eval_every=5)
    with pytest.raises(TrainingInterrupted):
        fit(again, tmp_path, should_stop=lambda: again.step == 3)  # stopped before its first evaluation
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [7, 14]
    assert (tmp_path / "metrics.json").exists()
    fit(again, tmp_path)
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [5, 10]
    assert not (tmp_path / "metrics.json").exists()
