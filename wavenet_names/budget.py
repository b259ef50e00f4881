"""The model for the time you have: `train --max-time S`, with no option that sizes the model, chooses
the model's size for S.

A ladder of sizes, from the defaults up, each with the recipe it was measured with on val (its own
number of steps), is timed on this machine at the start of the run: a few steps of each, smallest
first, on the run's own data and device; those seconds count in S. The largest size that what is left
of S gives at least ENOUGH of its recipe's steps trains, and its learning rate's schedule spans S
(training.progress): a bigger model needs most of its steps, and a smaller one given many more steps
than its recipe's overfits. The run says what it chose and why, in one line (Choice.line), which its
checkpoint and metrics.json keep.
"""

import re
import time
from dataclasses import dataclass

from . import distributed
from .configuration import TrainConfig, settings
from .models import ModelConfig, count_params
from .splits import Splits
from .training import Trainer

# A size is chosen when the time gives it at least this share of its recipe's steps. Measured on val:
# the gated blocks with 43% of their steps (30 s) reached 1.9801, the defaults 1.9754 in the same 30 s;
# with 85% (60 s), 1.9415, where the defaults, stretched over 2.5 times their steps, overfit to 1.9938.
ENOUGH = 0.6
WARM_STEPS, TIMED_STEPS = 2, 5  # each rung's timing: the first steps allocate, the next are timed


@dataclass(frozen=True)
class Rung:
    """A size on the ladder: its options by name, as `train`'s flags, and its recipe: the steps it was
    measured with, and the val they reached on data/names.txt (docs/experiments.md)."""

    name: str
    options: dict
    steps: int
    val: float


LADDER = (
    Rung("the defaults", {}, 4000, 1.9764),  # 76,579 parameters; `train`'s own recipe, three seeds
    Rung(  # 215,075 parameters; three seeds
        "gated, residual and skip blocks, dropout 0.2",
        dict(gated=True, residual=True, skip=True, dropout=0.2),
        4000,
        1.9347,
    ),
    # Given more time, the blocks above overfit (at 300 s, 20,301 steps: 1.9247, train 1.66): wider
    # blocks with more dropout take its place. --preset best's model is not a rung: at 300 and 600 s
    # it reached 1.9254 and 1.9222, behind these blocks in the same time.
    Rung(  # 469,731 parameters; 11,125 steps in 300 s
        "the same blocks wider (n_hidden 192), dropout 0.3",
        dict(gated=True, residual=True, skip=True, n_hidden=192, dropout=0.3),
        11_000,
        1.9122,
    ),
    Rung(  # 822,691 parameters; at 600 s the blocks above overfit too (22,220 steps: 1.9189)
        "the same blocks wider still (n_hidden 256), dropout 0.4",
        dict(gated=True, residual=True, skip=True, n_hidden=256, dropout=0.4),
        14_500,
        1.9099,
    ),
)
# What a rung sets, and the batch: a batch given is a recipe given (how many names its steps see).
SIZING = frozenset(name for rung in LADDER for name in rung.options) | {"batch_size"}


@dataclass(frozen=True)
class Choice:
    """The rung a run trains, and why: each timed rung's estimated seconds for its recipe here."""

    rung: Rung
    params: int
    estimates: tuple[float, ...]  # seconds, for LADDER's first len(estimates) rungs
    budget: float  # what was left of --max-time after the timing
    seconds: float  # the timing's own, counted in --max-time

    def line(self) -> str:
        chosen = LADDER.index(self.rung)
        why = f"its {self.rung.steps:,} steps take about {self.estimates[chosen]:.0f} s here"
        if ENOUGH * self.estimates[chosen] > self.budget:
            why = f"the smallest size: {why}, so in {self.budget:.0f} s it trains fewer"
        elif chosen + 1 < len(self.estimates):
            following = LADDER[chosen + 1]
            share = self.budget / self.estimates[chosen + 1]
            why += f"; the next size's ({following.name}) about {self.estimates[chosen + 1]:.0f} s, and the "
            why += f"{self.budget:.0f} s left would give it {share:.0%} of them, under {ENOUGH:.0%}"
        elif chosen + 1 == len(LADDER):
            why += ", the largest size"
        return f"--max-time chose {self.rung.name} ({self.params:,} parameters): {why}"


def chosen_size(line: str) -> str:
    """The size's name in a Choice's line, as a run saved it (metrics.json's "chosen")."""
    return re.match(r"--max-time chose (.+?) \([\d,]+ parameters\)", line).group(1)


def chooses(options: dict, preset: str | None, model_config: ModelConfig, config: TrainConfig) -> bool:
    """Whether a new run's size is chosen for its time: a single conv model with --max-time, not a
    fine-tune, and no preset and no option given that sizes a model (a rung's, or any of the kind's own)."""
    sizing = SIZING | set(vars(model_config.options))
    return (
        config.max_time is not None
        and config.init is None
        and config.members == 1
        and model_config.kind == "conv"
        and preset is None
        and not sizing & set(options)
    )


def choose(options: dict, splits: Splits, device, timed=None) -> tuple[ModelConfig, TrainConfig, Choice]:
    """The configs of the largest rung that options["max_time"] gives ENOUGH of its recipe's steps (the
    other options given apply to every rung), and the Choice. Rungs are timed smallest first, up to the first that
    does not fit; under torchrun every rank times them, and all take the slowest rank's figures, so that every
    rank chooses alike. timed(trainer) -> seconds a step: how a rung is timed (by default, a few steps)."""
    timed = timed or _seconds_a_step
    start, budget = time.perf_counter(), options["max_time"]
    estimates, chosen = [], None
    for rung in LADDER:
        model_config, config = settings({**rung.options, **options})
        trainer = Trainer(model_config.sized_for(splits), config, splits, device)
        estimate = distributed.most_over_ranks(rung.steps * timed(trainer), device)
        estimates.append(estimate)
        fits = ENOUGH * estimate <= budget - distributed.most_over_ranks(time.perf_counter() - start, device)
        if fits or chosen is None:  # the smallest size, if none fits
            chosen = (rung, trainer.model_config, config, count_params(trainer.model))
        if not fits:
            break
    rung, model_config, config, params = chosen
    spent = distributed.most_over_ranks(time.perf_counter() - start, device)
    return model_config, config, Choice(rung, params, tuple(estimates), budget - spent, spent)


def _seconds_a_step(trainer: Trainer) -> float:
    for _ in range(WARM_STEPS):
        trainer.train_step()
    start = time.perf_counter()
    for _ in range(TIMED_STEPS):
        loss, _ = trainer.train_step()
    float(loss)  # a GPU's steps are queued: done when the last loss can be read
    return (time.perf_counter() - start) / TIMED_STEPS
