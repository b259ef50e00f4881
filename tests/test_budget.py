"""`train --max-time S` as a recipe for S seconds (training.progress, budget.py): the learning rate's
schedule spans the time, --steps and --max-time end a run at whichever comes first, a resumed run
continues its clock, and with no option that sizes the model, the ladder's largest size that S gives
enough of its recipe's steps is chosen, in one line that says why. Without --max-time nothing changes."""

import json
import math

import pytest
import torch

from wavenet_names.budget import LADDER, choose, chooses, chosen_size
from wavenet_names.checkpoint import load_checkpoint
from wavenet_names.cli import main
from wavenet_names.configuration import TrainConfig, settings
from wavenet_names.data import NAMES_TXT
from wavenet_names.fitting import fit
from wavenet_names.models import count_params
from wavenet_names.options import OptionError
from wavenet_names.splits import Splits
from wavenet_names.training import Trainer, learning_rate

from helpers import TINY, small_run, step_clock


@pytest.fixture
def splits(all_words):
    return Splits.from_words(all_words[:400])


def as_before(config: TrainConfig, step: int) -> float:
    """The schedule before --max-time could span it: steps alone."""
    if config.schedule == "step":
        return config.lr if step < 0.75 * config.steps else config.lr / 10
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    if config.schedule == "constant":
        return config.lr
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr / 10 + (config.lr - config.lr / 10) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


@pytest.mark.parametrize("schedule", ["cosine", "step", "constant"])
def test_without_max_time_the_schedule_is_the_steps_alone_to_the_last_digit(schedule):
    config = TrainConfig(schedule=schedule, steps=4000, warmup=100)
    for step in range(0, 4200, 7):
        assert learning_rate(config, step, seconds=1e9) == as_before(config, step)  # the clock is not read


def test_with_max_time_alone_the_schedule_spans_the_time():
    config = TrainConfig(steps=None, max_time=100.0, warmup=100, lr=1e-2)
    assert learning_rate(config, 0, 0.0) == pytest.approx(1e-4)  # warm-up is still in steps
    assert learning_rate(config, 100, 0.0) == pytest.approx(1e-2)
    assert learning_rate(config, 100_000, 50.0) == pytest.approx(1e-3 + 9e-3 / 2)  # halfway through the time
    assert learning_rate(config, 100, 100.0) == pytest.approx(1e-3)  # ended, whatever the step
    rates = [learning_rate(config, 500, t) for t in range(0, 120, 5)]
    assert rates == sorted(rates, reverse=True) and rates[-1] == pytest.approx(1e-3)


def test_with_steps_and_max_time_the_schedule_follows_whichever_ends_first():
    config = TrainConfig(steps=1100, max_time=100.0, warmup=100)
    by_steps, by_time = TrainConfig(steps=1100, warmup=100), TrainConfig(steps=None, max_time=100.0, warmup=100)
    assert learning_rate(config, 1000, 10.0) == learning_rate(by_steps, 1000)  # 90% of the steps, 10% of the time
    assert learning_rate(config, 200, 90.0) == learning_rate(by_time, 200, 90.0)  # 10% of the steps, 90% of the time


def test_max_time_alone_leaves_the_steps_to_the_time():
    assert settings({})[1].steps == 4000
    assert settings({"max_time": 60.0})[1].steps is None
    assert settings({"max_time": 60.0, "steps": 500})[1].steps == 500  # given: whichever comes first
    assert settings({"max_time": 60.0}, preset="best")[1].steps is None  # a preset's steps are a recipe for steps
    assert settings({"model": "transformer", "max_time": 60.0})[1].steps is None  # and so are a kind's
    with pytest.raises(OptionError, match="steps"):
        TrainConfig(steps=None)


def test_a_run_for_the_time_ends_its_schedule_with_the_time(splits, tmp_path, monkeypatch):
    """A clock that moves 10 ms a step: a run of 1 s takes 100 steps, and its last lr is lr/10 (but for
    the last 10 ms); cut at 0.5 s and resumed, its clock goes on from there, to the same lr."""
    timed = step_clock(monkeypatch, 0.01)

    trainer = timed(small_run(splits, steps=None, max_time=1.0, warmup=10, eval_every=1000))
    fit(trainer, tmp_path / "whole")
    assert trainer.step == 100 and trainer.stopped == "its --max-time of 1 s of training is spent"
    assert trainer.lr == pytest.approx(learning_rate(trainer.config, 99, 0.99)) and trainer.lr < 1.01 * 3e-4

    half = timed(small_run(splits, steps=None, max_time=0.5, warmup=10, eval_every=1000))
    fit(half, tmp_path / "half")
    assert half.step == 50 and half.seconds == pytest.approx(0.5)
    checkpoint = load_checkpoint(tmp_path / "half" / "last.pt")
    resumed = timed(Trainer.from_checkpoint(checkpoint, splits, torch.device("cpu"), {"max_time": 1.0}))
    fit(resumed, tmp_path / "half")
    assert resumed.step == 100 and resumed.lr == pytest.approx(trainer.lr)


def by_size(seconds: dict[int, float]):
    """A rung's seconds a step by its parameters: how the ladder is timed, without the machine."""
    return lambda trainer: seconds[count_params(trainer.model)]


SIZES = {76_579: 0.005, 215_075: 0.02, 469_731: 0.027, 822_691: 0.04}  # the ladder's models on data/names.txt


@pytest.mark.parametrize(
    "max_time, rung, timed",
    [(5, 0, 1), (30, 0, 2), (50, 1, 3), (100, 1, 3), (300, 2, 4), (800, 3, 4)],  # at 50 s, 62% of the blocks' 80 s
)
def test_the_largest_size_the_time_gives_enough_of_its_steps_is_chosen(max_time, rung, timed):
    splits = Splits.read(NAMES_TXT)
    model_config, config, choice = choose({"max_time": float(max_time)}, splits, torch.device("cpu"), by_size(SIZES))
    assert choice.rung is LADDER[rung] and len(choice.estimates) == timed  # none timed past the first that does not fit
    assert choice.estimates[0] == pytest.approx(LADDER[0].steps * 0.005)
    assert config.max_time == max_time and config.steps is None
    assert model_config.options.n_hidden == (128, 128, 192, 256)[rung] and model_config.options.gated == (rung > 0)
    line = choice.line()
    assert line.startswith(f"--max-time chose {LADDER[rung].name} ({choice.params:,} parameters): ")
    assert chosen_size(line) == LADDER[rung].name  # the race's table reads it back, parentheses and all
    assert f"its {LADDER[rung].steps:,} steps take about {choice.estimates[rung]:.0f} s here" in line
    if rung == 0 and max_time < 20:
        assert "the smallest size" in line
    elif rung + 1 < len(LADDER):
        assert f"the next size's ({LADDER[rung + 1].name})" in line and "of them, under 60%" in line
    else:
        assert line.endswith("the largest size")


def test_options_given_with_max_time_are_every_sizes_own(all_words):
    splits = Splits.from_words(all_words[:400])
    model_config, config, choice = choose(
        {"max_time": 1000.0, "lr": 1e-3}, splits, torch.device("cpu"), lambda trainer: 0.001
    )
    assert config.lr == 1e-3 and choice.rung is LADDER[-1]


@pytest.mark.parametrize(
    "options, preset, sized",
    [
        ({"max_time": 60.0}, None, True),
        ({"max_time": 60.0, "lr": 1e-3, "steps": 900}, None, True),
        ({}, None, False),  # no time given
        ({"max_time": 60.0, "n_hidden": 64}, None, False),  # the model's own options kept
        ({"max_time": 60.0, "batch_size": 64}, None, False),
        ({"max_time": 60.0, "dropout": 0.1}, None, False),
        ({"max_time": 60.0}, "best", False),
        ({"max_time": 60.0, "members": 2}, None, False),
        ({"max_time": 60.0, "model": "transformer"}, None, False),
    ],
)
def test_the_size_is_chosen_only_when_nothing_sizes_the_model(options, preset, sized):
    assert chooses(options, preset, *settings(options, preset=preset)) == sized


def test_train_says_what_it_chose_once_and_keeps_it(small_data_file, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", str(small_data_file), "--out", str(out), "--max-time", "1", "--samples", "0"]
    assert main(args + ["--eval-every", "20"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("--max-time chose the defaults (") and "the smallest size" in printed[0]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["chosen"] == printed[0] and metrics["train_config"]["steps"] is None
    assert load_checkpoint(out / "last.pt")["chosen"] == printed[0]
    assert metrics["seconds"] >= 1.0
    assert main(["train", "--out", str(out), "--resume", "--max-time", "1.5", "--samples", "0"]) == 0
    assert not any(line.startswith("--max-time chose") for line in capsys.readouterr().out.splitlines())
    assert json.loads((out / "metrics.json").read_text())["chosen"] == printed[0]


def test_explicit_model_options_train_as_given_scheduled_by_the_time(small_data_file, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", str(small_data_file), "--out", str(out), "--max-time", "0.5", *TINY]
    assert main(args) == 0
    assert "--max-time chose" not in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"]["n_hidden"] == 16 and metrics["train_config"]["steps"] is None and "chosen" not in metrics
