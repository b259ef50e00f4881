"""The training loop: fit trains a Trainer to its end, evaluating over the whole val split, saving
what a resume needs, and stopping early when asked (Ctrl-C), when val stops improving (--patience)
or when the time is spent (--max-time); finish gives a run's final figures. The loop never prints:
it reports through callbacks, and the command line draws the progress bar.
"""

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from . import distributed
from .checkpoint import load_checkpoint, save_checkpoint
from .files import write_json, write_text
from .models import batches_for, build_model, count_params
from .plots import plot_losses
from .scoring import evaluate
from .training import Trainer


class TrainingDiverged(ValueError):
    """The validation loss is not a number: the weights are nan or inf, and training cannot recover."""

    def __init__(self, step: int, val_loss: float, best_step: int | None):
        kept = (
            f"model.pt keeps the best model, from step {best_step}" if best_step is not None else "no model was saved"
        )
        super().__init__(
            f"training diverged: the validation loss is {val_loss} at step {step}; try a smaller --lr ({kept})"
        )
        self.step = step


class TrainingInterrupted(Exception):
    """Ctrl-C: `path` (a last.pt) saved at `step`; `out` is the directory that `train --resume` continues
    (the run's own, or the ensemble's that the run is a member of)."""

    def __init__(self, step: int, path: Path, out: Path | None = None):
        super().__init__(f"interrupted at step {step}; saved {path}")
        self.step, self.path, self.out = step, path, out or path.parent

    def __reduce__(self):  # from a process that trained an ensemble's member (runs.run_ensemble)
        return TrainingInterrupted, (self.step, self.path, self.out)


# what runs a Trainer to its end, writing into a directory: the CLI's fit with a progress bar
Runner = Callable[[Trainer, Path], None]


def fit(
    trainer: Trainer,
    out: Path,
    on_step: Callable[[int, torch.Tensor, float], None] | None = None,
    on_eval: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict:
    """Train to config.steps, evaluating every eval_every steps, or until config.patience or
    config.max_time stops it sooner, with an evaluation there (trainer.stopped then says why). Writes into `out`:
    last.pt (the latest state, for --resume and restarts: at every evaluation, and every
    checkpoint_every steps), model.pt (the best by validation loss) and metrics.jsonl (one record per
    evaluation). When should_stop() turns true (the CLI's Ctrl-C), saves last.pt at a step boundary
    and raises TrainingInterrupted; when the validation loss is nan or inf, raises TrainingDiverged,
    with last.pt and model.pt as the last finite evaluation left them. Returns the last evaluation
    record."""
    out.mkdir(parents=True, exist_ok=True)
    config, record, since, main = trainer.config, None, _Since(trainer), trainer.context.is_main  # rank 0 writes
    # a resumed run whose time was spent trains no further; a run with no evaluation yet trains to one
    evaluated = distributed.any_rank(bool(trainer.history), trainer.device)  # (rank 0 keeps the history)
    seconds = since.clock()
    trainer.stopped = _stop_reason(trainer, since.time_up(seconds)) if evaluated else None
    while (config.steps is None or trainer.step < config.steps) and trainer.stopped is None:
        if distributed.any_rank(should_stop(), trainer.device):
            _save_last(trainer, out, since.bank(), main)
            raise TrainingInterrupted(trainer.step, out / "last.pt")
        loss, n = trainer.train_step(seconds)
        since.took(loss, n)
        if on_step is not None:
            on_step(trainer.step, loss, since.rate())
        seconds = since.clock()
        out_of_time = since.time_up(seconds)
        if trainer.step % config.eval_every == 0 or trainer.step == config.steps or out_of_time:
            ranks_rng = since.bank()
            if main:
                record = _evaluation(trainer, out, ranks_rng, since.positions, since.elapsed())
                if on_eval is not None:
                    on_eval(record)
            since.restart()  # the evaluation's time is not training time
            trainer.stopped = _stop_reason(trainer, out_of_time)
            seconds = since.clock()
        elif config.checkpoint_every and trainer.step % config.checkpoint_every == 0:
            _save_last(trainer, out, since.bank(), main)
    return record


class _Since:
    """What fit keeps since the last evaluation: each step's loss (tensors, so that a GPU need not
    wait), the positions trained and when that began, for the rate; and when trainer.seconds last
    took in the time."""

    def __init__(self, trainer: Trainer):
        self.trainer, self.losses, self.positions = trainer, [], 0
        self.started = self.banked_at = time.perf_counter()

    def took(self, loss: torch.Tensor, positions: int) -> None:
        self.losses.append(loss)
        self.positions += positions

    def rate(self) -> float:
        return self.positions / (self.elapsed() + 1e-9)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def bank(self) -> list[dict]:
        """Into the trainer, what a checkpoint must hold (every step's loss, the time); on every rank.
        Returns every rank's random state (a collective: every rank, at the same step)."""
        trainer, now = self.trainer, time.perf_counter()
        trainer.train_losses += torch.stack(self.losses).float().tolist() if self.losses else []
        trainer.seconds += now - self.banked_at
        self.losses, self.banked_at = [], now
        return trainer.ranks_rng()

    def clock(self) -> float:
        """The seconds of training so far, over every resumed session; with --max-time, the slowest
        rank's, so that every rank follows one schedule and stops at the same step (one collective a
        step, as the stop needed before the schedule followed the time)."""
        trainer = self.trainer
        seconds = trainer.seconds + time.perf_counter() - self.banked_at
        return seconds if trainer.config.max_time is None else distributed.most_over_ranks(seconds, trainer.device)

    def time_up(self, seconds: float) -> bool:
        """Whether config.max_time is spent, by clock()'s `seconds`, which every rank shares."""
        return self.trainer.config.max_time is not None and seconds >= self.trainer.config.max_time

    def restart(self) -> None:
        self.positions, self.started = 0, time.perf_counter()
        self.banked_at = self.started


def _save_last(trainer: Trainer, out: Path, ranks_rng: list[dict], main: bool) -> None:
    if main:
        save_checkpoint(trainer.checkpoint(ranks_rng), out / "last.pt")


def _stop_reason(trainer: Trainer, out_of_time: bool) -> str | None:
    """Why training stops here, before config.steps, or None: the time is spent, or the validation
    loss has not improved for config.patience evaluations (rank 0's history, which every rank hears)."""
    config, history = trainer.config, trainer.history
    if out_of_time:
        return f"its --max-time of {config.max_time:g} s of training is spent"
    if config.patience is None:
        return None
    best = min(range(len(history)), key=lambda i: history[i]["val_loss"], default=None)  # the first of equals
    since = 0 if best is None else len(history) - 1 - best
    if not distributed.any_rank(since >= config.patience, trainer.device):
        return None
    if best is None:  # a rank other than 0, which keeps no history
        return "val has not improved (--patience)"
    return f"val has not improved for {since} evaluations, since step {history[best]['step']} (--patience)"


def _evaluation(trainer: Trainer, out: Path, ranks_rng: list[dict], positions: int, seconds: float) -> dict:
    val_loss = evaluate(trainer.model, trainer.val_batches)
    if not math.isfinite(val_loss):  # before anything is written: last.pt keeps the last state worth resuming
        best = min(trainer.history, key=lambda r: r["val_loss"], default=None)
        raise TrainingDiverged(trainer.step, val_loss, best["step"] if best else None)
    improved = val_loss < trainer.best_val_loss
    trainer.best_val_loss = min(val_loss, trainer.best_val_loss)
    # every step since the last evaluation, those before a Ctrl-C or a crash included
    since = trainer.train_losses[-(trainer.step - (trainer.history[-1]["step"] if trainer.history else 0)) :]
    record = {
        "step": trainer.step,
        "train_loss": sum(since) / len(since),  # mean training-batch loss since the last evaluation
        "val_loss": val_loss,
        "best_val_loss": trainer.best_val_loss,
        "lr": trainer.lr,  # the last update's
        "positions_per_second": positions / max(seconds, 1e-9),
        "seconds": trainer.seconds,
    }
    # The run's first record replaces what an earlier run in `out` left (train --overwrite): only now,
    # so that a run failing before it has anything to show leaves the earlier one whole.
    first = not trainer.history
    trainer.history.append(record)
    checkpoint = trainer.checkpoint(ranks_rng)
    if improved:
        save_checkpoint(checkpoint, out / "model.pt")
    save_checkpoint(checkpoint, out / "last.pt")
    if first:
        for stale in ("metrics.json", "loss.png"):
            (out / stale).unlink(missing_ok=True)
    # written whole from the history that last.pt holds, not appended: a run restarted from last.pt
    # has the records it had, never a line twice or half a line
    write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in trainer.history))
    return record


def finish(trainer: Trainer, out: Path) -> tuple[dict, torch.nn.Module]:
    """The final figures of a run, from its best checkpoint (model.pt): the loss over the whole
    training split and the best validation loss. Writes metrics.json and loss.png; returns the
    figures and the best model."""
    best = load_checkpoint(out / "model.pt", map_location=trainer.device)
    model = build_model(trainer.model_config).to(trainer.device)
    model.load_state_dict(best["model"])
    metrics = {
        "train_loss": evaluate(model, trainer.train_batches),
        "val_loss": best["best_val_loss"],
        "steps": trainer.step,
        "epochs": trainer.epochs,
        "best_step": best["step"],
        "seconds": round(trainer.seconds, 2),
        "params": count_params(model),
        **({"stopped": trainer.stopped} if trainer.stopped else {}),
        **({"chosen": trainer.chosen} if trainer.chosen else {}),
        **({"base": trainer.base} if trainer.base else {}),
        "model": trainer.model_config.saved(),
        "train_config": asdict(trainer.config),
    }
    if trainer.config.report_test:  # once, of the model chosen by val
        test = batches_for(model, trainer.splits, "test", trainer.device)
        metrics["test_loss"] = evaluate(model, test)
    write_json(metrics, out / "metrics.json")
    plot_losses(trainer.train_losses, trainer.history, out / "loss.png")
    return metrics, model.eval()
