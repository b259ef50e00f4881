"""What the command line shows: a run's progress (a bar on a terminal, a line per evaluation), its
final figures, and names with their marks. With cli.py, the only modules that print."""

import multiprocessing
import os
import re
import signal
import sys
from pathlib import Path

from .choosing import SampleConfig, default_cut_at
from .fitting import fit
from .logs import TensorBoardLog
from .sampling import stream_sampled
from .training import Trainer, out_of_memory

LONG_EVALUATION = 100_000  # items of a training split whose final evaluation is said first: 40 s for 560,000 here


class Lines:
    """What a progress bar does where none is drawn: its lines printed, nothing else. No tqdm at all: a
    tqdm bar, even disabled, takes tqdm's write lock, a multiprocessing lock that a forked process shares
    with its parent, so that one killed while holding it would stop every other for good."""

    def update(self, n: int) -> None:
        pass

    def set_postfix(self, **kwargs) -> None:
        pass

    def write(self, line: str) -> None:
        print(line)

    def close(self) -> None:
        pass


class Progress:
    """fit's callbacks for the command line: a bar on a terminal (in a log file, a pipe or CI, only
    the evaluation lines: a bar's updates would be thousands of lines there), a line per evaluation,
    eval_samples names at each (seeded on their own, in eval mode: training's random numbers are
    untouched), a TensorBoard log, and Ctrl-C as a request to save and stop (a second: stop now)."""

    def __init__(self, trainer: Trainer, label: str, draw_bar: bool, eval_samples: int, tensorboard: Path | None):
        self.trainer, self.label, self.stop_requested = trainer, label, False
        self.drawn = draw_bar and trainer.context.is_main and sys.stderr.isatty()
        self.bar = Lines()
        if self.drawn:
            from tqdm import tqdm

            config = trainer.config
            self.bar = tqdm(total=config.steps, initial=trainer.step, unit="step", dynamic_ncols=True, file=sys.stderr)
        main = trainer.context.is_main
        self.log = TensorBoardLog(tensorboard) if tensorboard is not None and main else None
        self.samples = None  # the config of eval_samples names, made once for the run
        if eval_samples:
            self.samples = SampleConfig(n=eval_samples, seed=0, cut_at=default_cut_at(trainer.splits.train))

    def on_sigint(self, signum, frame) -> None:
        if self.stop_requested:
            raise KeyboardInterrupt
        self.stop_requested = True

    def on_step(self, step: int, loss, positions_per_second: float) -> None:
        self.bar.update(1)
        if self.drawn and step % 25 == 0:  # float(loss) waits for the device: only for a bar someone sees
            self.bar.set_postfix(loss=f"{float(loss):.4f}", pos_per_s=f"{positions_per_second:,.0f}", refresh=False)

    def on_eval(self, record: dict) -> None:
        self.bar.write(
            f"{self.label}step {record['step']:>7}  train {record['train_loss']:.4f}  val {record['val_loss']:.4f}  "
            f"lr {record['lr']:.2e}  {record['positions_per_second']:,.0f} positions/s"
        )
        if self.log is not None:
            self.log(record)
        if self.samples is not None:
            trainer, seen = self.trainer, self.trainer.splits.seen
            names = stream_sampled(trainer.model, trainer.splits.vocab, self.samples)
            self.bar.write(f"{self.label}  samples: {', '.join(f'{n}{seen.mark(n).strip()}' for n, _ in names)}")
        sys.stdout.flush()  # a log file gets each line when it is made

    def close(self) -> None:
        self.bar.close()
        if self.log is not None:
            self.log.close()


def run_with_progress(
    trainer: Trainer,
    out: Path,
    label: str = "",
    draw_bar: bool = True,
    eval_samples: int = 0,
    tensorboard: Path | None = None,
) -> None:
    """fit, as the command line shows it (Progress): a runs.Runner."""
    if not label and trainer.step == 0:
        say_data(trainer)
    if trainer.chosen and trainer.context.is_main and not trainer.history:  # a new run, its size chosen
        print(f"{label}{trainer.chosen}", flush=True)
    progress = Progress(trainer, label, draw_bar, eval_samples, tensorboard)
    previous = signal.signal(signal.SIGINT, progress.on_sigint)
    try:
        fit(trainer, out, progress.on_step, progress.on_eval, should_stop=lambda: progress.stop_requested)
    finally:
        signal.signal(signal.SIGINT, previous)
        progress.close()
    items = len(trainer.splits.train)
    if items >= LONG_EVALUATION and trainer.context.is_main:  # what comes next (fitting.finish) takes a while
        print(f"{label}evaluating the best model over the {items:,} items of the training split", flush=True)


def run_member(trainer: Trainer, out: Path, eval_samples: int = 0, tensorboard: Path | None = None) -> None:
    """An ensemble's member: its run, its evaluation lines labelled with its directory. Several at
    once, each in a process of its own, print their evaluations alone: one bar each would be a mess."""
    if out.name == "member-1" and trainer.step == 0:  # the members share their data: said once
        say_data(trainer)
    print(f"{out}: seed {trainer.config.seed}, from step {trainer.step}", flush=True)
    alone = multiprocessing.parent_process() is None
    log = tensorboard and tensorboard / out.name  # a member's own run of the ensemble's logs
    run_with_progress(trainer, out, f"{out.name}  ", alone, eval_samples, log)


def say_data(trainer: Trainer) -> None:
    """What a new run should know of its data before it trains (Splits.notes): warnings on stderr."""
    if trainer.context.is_main:
        notes, warnings = trainer.splits.notes(trainer.config.data)
        for line in notes:
            print(line, flush=True)
        for line in warnings:
            print(f"warning: {line}", file=sys.stderr, flush=True)


def say_restarted(trainer: Trainer, out: Path) -> None:
    if trainer.context.is_main:
        print(f"continuing this run from {out / 'last.pt'}, at step {trainer.step} (torchrun restarted it)")


def print_trained(metrics: dict, trainer: Trainer | None, out: Path) -> None:
    """The final figures of a run's best checkpoint (model.pt), or of an ensemble (no trainer), and
    what was written."""
    if trainer is None:
        config = metrics["train_config"]
        alone = ", ".join(f"{m['val_loss']:.4f}" for m in metrics["members"])
        print(
            f"ensemble: train {metrics['train_loss']:.4f}  val {metrics['val_loss']:.4f}  over the whole splits  "
            f"({metrics['params']:,} parameters in "
            f"{config['members']} models of {length(config['steps'], config['max_time'])}, "
            f"{config['members_at_once']} at a time, "
            f"{metrics['seconds']:.0f} s of training; val of each alone {alone})"
        )
        print_test(metrics)
        print(
            f"wrote {out / 'model.pt'} (the ensemble) and {out / 'metrics.json'}; each model's run is in {out}/member-N"
        )
        return
    if "stopped" in metrics:
        of = "" if trainer.config.steps is None else f" of {trainer.config.steps}"
        print(f"stopped at step {trainer.step}{of}: {metrics['stopped']}")
    # the step lines' train figure is the mean of the batches since the evaluation before; these are
    # model.pt's, over every item of each split
    print(
        f"best model (step {metrics['best_step']}): train {metrics['train_loss']:.4f}  val {metrics['val_loss']:.4f}  "
        f"over the whole splits  ({metrics['params']:,} parameters, {trainer.step} steps, "
        f"{epochs(trainer.epochs)}, {trainer.seconds:.0f} s)"
    )
    print_test(metrics)
    written = ["model.pt (the best)", "last.pt (for --resume)", "metrics.jsonl", "metrics.json", "loss.png"]
    print(f"wrote {', '.join(str(out / name) for name in written)}")


def print_test(metrics: dict) -> None:
    if "test_loss" in metrics:
        print(f"test {metrics['test_loss']:.4f}  (the test split, evaluated once, at the end)")


def epochs(count: float) -> str:
    """'20 epochs', '2.5 epochs', '0.14 epochs': few enough digits to read, enough to see under one."""
    return f"{count:.0f} epochs" if count >= 10 else f"{count:.2g} epochs"


def print_run(name: str, metrics: dict) -> None:
    print(
        f"{name}: train {metrics['train_loss']:.4f}  val {metrics['val_loss']:.4f}  "
        f"({metrics['params']:,} parameters, {metrics['seconds']:.0f} s)",
        flush=True,
    )


# --- errors and facts, in the command line's words --------------------------------------------------


def version() -> str:
    """The installed package's version, as pyproject.toml gives it."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("wavenet_names")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


def allocation_failed(e: RuntimeError) -> str | None:
    """What a failed allocation asked for ("2.00 GiB more"), when e is one, on a GPU or a CPU; else None."""
    if not out_of_memory(e):
        return None
    asked = re.search(r"tried to allocate ([\d.]+) ?(\w+)", str(e), re.IGNORECASE)
    if asked is None:
        return "an allocation failed"
    amount, unit = asked.groups()
    return f"{float(amount) / 2**30:,.1f} GiB more" if unit == "bytes" else f"{amount} {unit} more"


def is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def length(steps: int | None, max_time: float | None) -> str:
    """A run's planned length, as its options give it: steps, seconds, or both."""
    parts = ([] if steps is None else [f"{steps} steps"]) + ([] if max_time is None else [f"{max_time:g} s"])
    return " or ".join(parts)
