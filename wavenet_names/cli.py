"""wavenet-names: train, sample, evaluate and score. The only module that prints.

Bad input, and running out of memory, end in one line on stderr and exit status 2. Ctrl-C during
training saves and exits 130; anywhere else it exits 130 too, with one line and no traceback.
"""

import argparse
import functools
import multiprocessing
import os
import re
import signal
import sys
import typing
from pathlib import Path

import torch

from . import experiments, presets, runs, shipped
from .checkpoint import CheckpointError, label_columns, load_models, training_data
from .constraints import Constraints, TooRare, stream_constrained
from .data import DataError, Vocab, parse_words, read_words
from .devices import DEVICE_HELP, resolve_device
from .labels import LabelColumns, Table, no_labels_error, read_items
from .logs import TensorBoardLog
from .models import KINDS, ModelConfig
from .options import OptionError, default, flag, option_fields, option_name
from .sampling import MARKS, SampleConfig, Seen, default_cut_at, stream_sampled
from .scoring import stream_scores
from .training import (
    Splits,
    TrainConfig,
    Trainer,
    TrainingInterrupted,
    evaluate,
    fit,
    out_of_memory,
)

DEFAULT_CHECKPOINT = "out/model.pt"  # what sample, evaluate and score read when given no --checkpoint, if it is there
TRAINING_COMMANDS = ("train", "experiment")  # what a second Ctrl-C cuts short, and a smaller batch helps
# how the command line spells each option's field, for errors the library raises about it
FLAGS = {f.name: flag(f) for cls in (ModelConfig, TrainConfig, SampleConfig, Constraints) for f in option_fields(cls)}


class Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except TrainingInterrupted as e:
        if _is_main_process():
            again = "the same command" if args.command == "experiment" else f"train --out {e.out} --resume"
            print(f"\n{e}; continue with: wavenet-names {again}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # Ctrl-C while sampling or evaluating, or a second one while training
        if _is_main_process():
            # a second Ctrl-C while training: it stops without saving
            unsaved = "; nothing saved since the last evaluation" if args.command in TRAINING_COMMANDS else ""
            print(f"\nwavenet-names {args.command}: interrupted{unsaved}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `wavenet-names sample -n 100000 | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that exit's flush is quiet too
        return 141  # 128 + SIGPIPE, what a shell reports for a command stopped by a closed pipe
    except (DataError, CheckpointError, ValueError, OSError) as e:
        # an option's error names its field (n_layers), as the library's argument; here it is a flag (--n-layers)
        message = e.shown(FLAGS) if isinstance(e, OptionError) else _said(e)
        if _is_main_process():  # under torchrun every rank fails alike: one line, not one per rank
            print(f"wavenet-names {args.command}: error: {message}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        asked = _allocation_failed(e)
        if asked is None:  # not the user's to fix: a bug, with its traceback
            raise
        if _is_main_process():
            smaller = "; try a smaller --batch-size" if args.command in TRAINING_COMMANDS else ""
            print(f"wavenet-names {args.command}: error: out of memory ({asked}){smaller}", file=sys.stderr)
        return 2


def _version() -> str:
    """The installed package's version, as pyproject.toml gives it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wavenet_names")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


def _said(e: Exception) -> str:
    """An error's one line: an OSError as its file and the system's words, not "[Errno 2] ..."."""
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}"
    return str(e)


def _allocation_failed(e: RuntimeError) -> str | None:
    """What a failed allocation asked for ("2.00 GiB more"), when e is one, on a GPU or a CPU; else None."""
    if not out_of_memory(e):
        return None
    asked = re.search(r"tried to allocate ([\d.]+) ?(\w+)", str(e), re.IGNORECASE)
    if asked is None:
        return "an allocation failed"
    amount, unit = asked.groups()
    return f"{float(amount) / 2**30:,.1f} GiB more" if unit == "bytes" else f"{amount} {unit} more"


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="wavenet-names", description="A WaveNet-style character-level language model of names.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    train = commands.add_parser("train", help="train a model (with no options: ConvWaveNet on data/names.txt)")
    train.add_argument("--out", default="out", help="directory for model.pt, last.pt, loss.png, metrics (default: out)")
    train.add_argument(
        "--preset",
        choices=list(presets.TRAIN_PRESETS),
        help="a tested configuration; options given with it still apply. " + presets.PRESET_HELP,
    )
    train.add_argument("--resume", action="store_true", help="continue the run saved in OUT/last.pt")
    train.add_argument("--overwrite", action="store_true", help="start afresh even if OUT holds a checkpoint")
    train.add_argument("--samples", type=int, default=10, help="names to print at the end (default 10)")
    train.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="also log each evaluation's train and val loss, learning rate and positions/s for TensorBoard "
        "(tensorboard --logdir DIR); needs the tensorboard extra",
    )
    train.add_argument(
        "--eval-samples",
        type=int,
        default=0,
        metavar="N",
        help="also print N names at each evaluation, from one seed, so that each line shows the same draws "
        "from a better model; training draws the same numbers either way (default 0)",
    )
    _add_model_options(train)
    _add_options(train.add_argument_group("training"), TrainConfig)
    train.set_defaults(run=cmd_train)

    sample = commands.add_parser("sample", help="print new names from a checkpoint")
    _add_checkpoint(sample)
    sample.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="COLUMN=VALUE",
        help="a conditional model's label for every name, e.g. --label sex=F --label decade=1920; "
        "a label not given is unknown",
    )
    _add_options(sample, SampleConfig)
    constraints = sample.add_argument_group(
        "constraints", "names that break one are drawn again: those kept follow the model's distribution given them"
    )
    _add_options(constraints, Constraints)
    constraints.add_argument("--exclude", metavar="FILE", help="a file of names to leave out, one per line")
    sample.set_defaults(run=cmd_sample)

    experiment = commands.add_parser("experiment", help="the lecture's results table, or a sweep over options")
    kinds = experiment.add_subparsers(dest="experiment", required=True, parser_class=Parser)
    lecture = kinds.add_parser("lecture", help="train the lecture's performance log as presets, write a table")
    quick_help = f"every step count divided by {presets.QUICK_FACTOR}: the table in minutes"
    lecture.add_argument("--quick", action="store_true", help=quick_help)
    lecture.add_argument(
        "--out", default="out/lecture", help="directory for the runs and results.md (default out/lecture)"
    )
    lecture.add_argument("--data", help="default: data/names.txt")
    lecture.add_argument("--seed", type=int, default=42, help="default 42")
    lecture.set_defaults(run=cmd_lecture)
    race = kinds.add_parser(
        "race", help="train every kind with its own recipe against the clock, on one split; write a table and a plot"
    )
    race.add_argument(
        "--budgets",
        type=_budgets,
        default=experiments.RACE_BUDGETS,
        help="seconds of training, comma-separated: the table's columns; each kind trains up to the largest "
        f"(default {','.join(map(str, experiments.RACE_BUDGETS))})",
    )
    race.add_argument("--out", default="out/race", help="directory for the runs, results.md and race.png")
    race.add_argument("--data", help="default: data/names.txt")
    race.add_argument("--seed", type=int, default=42, help="default 42")
    race.set_defaults(run=cmd_race)
    sweep = kinds.add_parser("sweep", help="train every point of a grid or random search, resumably")
    sweep_help = "a JSON sweep file (its format: help(wavenet_names.experiments.SweepConfig))"
    sweep.add_argument("--config", required=True, help=sweep_help)
    sweep.add_argument(
        "--out", default="out/sweep", help="directory for the runs and results.jsonl (default out/sweep)"
    )
    sweep.add_argument("--data", help="default: data/names.txt")
    sweep.set_defaults(run=cmd_sweep)

    serve = commands.add_parser("serve", help="names over HTTP from one model: a JSON API, and a page to get them")
    _add_checkpoint(serve)
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to listen on (default 127.0.0.1: this machine alone; 0.0.0.0: every network interface)",
    )
    serve.add_argument("--port", type=int, default=8000, help="default 8000; 0: a free port, printed when it starts")
    serve.add_argument(
        "--window-ms",
        type=float,
        default=5.0,
        help="how long a request waits for others to share its generation pass (default 5)",
    )
    serve.add_argument(
        "--no-batching",
        action="store_true",
        help="draw for one request at a time, to measure what batching gives",
    )
    serve.set_defaults(run=cmd_serve)

    ship = commands.add_parser(
        "ship", help="train the models that the package ships again, with the default recipe, and write them"
    )
    ship.add_argument(
        "--out", default="out/shipped", help="directory for the two runs, resumable (default out/shipped)"
    )
    ship.add_argument(
        "--into",
        default=str(shipped.DIRECTORY),
        help="where to write the slim checkpoints and trained.json (default: the package's own)",
    )
    ship.set_defaults(run=cmd_ship)

    ev = commands.add_parser("evaluate", help="print the mean loss of a checkpoint over a whole split")
    _add_checkpoint(ev)
    ev.add_argument("--data", help="default: the file the checkpoint was trained on")
    ev.add_argument(
        "--split",
        choices=("train", "val", "test", "all"),
        default="val",
        help="the lecture's split of the data (default val); all: every item, e.g. of a file held out from training",
    )
    ev.add_argument("--device", default="auto", help=DEVICE_HELP)
    ev.set_defaults(run=cmd_evaluate)

    score = commands.add_parser(
        "score", help="print each item's loss per character: the highest are the least like the training data"
    )
    score.add_argument(
        "items",
        nargs="?",
        default="-",
        help="text file, one item per line, or a .tsv or .csv table, whose "
        "labels a conditional model reads (default -: standard input, one item per line)",
    )
    _add_checkpoint(score)
    score.add_argument("--lowercase", action="store_true", help="lowercase each item before it is scored")
    score.add_argument(
        "--skip-unknown",
        action="store_true",
        help="skip each item with a character the model does not know, and say how many were skipped "
        "(without it, one such item is an error, before any score)",
    )
    score.add_argument("--device", default="auto", help=DEVICE_HELP)
    score.set_defaults(run=cmd_score)
    return parser


def _add_checkpoint(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--checkpoint",
        action="append",
        metavar="FILE",
        help=f"a checkpoint file, a run's directory, or a shipped model: {', '.join(shipped.SHIPPED)} "
        f"(default: {DEFAULT_CHECKPOINT} if there is one, else the shipped {shipped.DEFAULT}); given more than "
        "once, the models as one ensemble, their next-character distributions averaged",
    )


def _add_model_options(train: argparse.ArgumentParser) -> None:
    """ModelConfig's options: those every kind takes, then a group for each kind's own."""
    own = {name: kind for kind in KINDS.values() for name in kind.options}
    _add_options(train.add_argument_group("model"), ModelConfig, lambda f: f.name not in own)
    for kind in KINDS.values():
        if kind.options:
            group = train.add_argument_group(f"{kind.name} model only")
            _add_options(group, ModelConfig, lambda f, kind=kind: own.get(f.name) is kind)


def _add_options(parser, cls, keep=lambda f: True) -> None:
    """A flag for each option field of the config dataclass `cls` (see options.option). Every flag
    defaults to None, so that an option not given is told from one given its default value."""
    for f in option_fields(cls):
        if not keep(f):
            continue
        spec = {"dest": option_name(f), "default": None, "help": _help(f)}
        if f.type is bool:
            spec["action"] = argparse.BooleanOptionalAction if f.metadata["negatable"] else "store_true"
        else:  # int, float, str, or one of them | None
            spec["type"] = next(t for t in (int, float, str) if t is f.type or t in typing.get_args(f.type))
            spec["choices"] = f.metadata["choices"]
        parser.add_argument(flag(f), **spec)


def _help(f) -> str:
    """An option's help, with its default, and each model kind's own where it differs."""
    text = f.metadata["help"]
    if not f.metadata["show_default"] or f.type is bool:
        return text
    base, by_value = default(f), {}
    owner = next((kind for kind in KINDS.values() if f.name in kind.options), None)
    for kind in KINDS.values() if owner is None else []:
        value = {**kind.sizes, **kind.recipe}.get(f.name, base)
        if value != base:
            by_value.setdefault(value, []).append(kind.name)
    if owner is not None:  # an option of one kind: that kind's default
        base = owner.sizes.get(f.name, base)
    shown = [str(base)] if base is not None else []
    shown += [f"{' and '.join(names)} {value}" for value, names in by_value.items()]
    return f"{text} (default {'; '.join(shown)})" if shown else text


def _given(args, *classes) -> dict:
    """The options given on the command line, by option name."""
    names = [option_name(f) for cls in classes for f in option_fields(cls)]
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def cmd_train(args) -> int:
    """Train in this process, or as one rank of `torchrun ... -m wavenet_names train` (rank 0 prints)."""
    for name in ("samples", "eval_samples"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} cannot be negative, got {getattr(args, name)}")
    given = _given(args, ModelConfig, TrainConfig)
    request = runs.Request(Path(args.out), given, args.preset, args.resume, args.overwrite)
    shown = dict(eval_samples=args.eval_samples, tensorboard=args.tensorboard and Path(args.tensorboard))
    if args.tensorboard:
        TensorBoardLog.check()  # before any training: a missing package is one line now, not at the first evaluation
    runner = functools.partial(_run_with_progress, **shown)
    member_runner = functools.partial(_run_member, **shown)
    trained = runs.train(request, runner, member_runner, on_restart=_say_restarted)
    if trained is None:  # a rank of several, not the first
        return 0
    _print_trained(trained, request.out)
    if args.tensorboard:
        print(f"logged each evaluation for TensorBoard in {args.tensorboard} (tensorboard --logdir {args.tensorboard})")
    _print_samples(trained.model, trained.vocab, trained.seen, args.samples)
    return 0


def _say_restarted(trainer: Trainer, out: Path) -> None:
    if trainer.context.is_main:
        print(f"continuing this run from {out / 'last.pt'}, at step {trainer.step} (torchrun restarted it)")


def _run_member(trainer: Trainer, out: Path, eval_samples: int = 0, tensorboard: Path | None = None) -> None:
    """An ensemble's member: its run, its evaluation lines labelled with its directory. Several at
    once, each in a process of its own, print their evaluations alone: one bar each would be a mess."""
    print(f"{out}: seed {trainer.config.seed}, from step {trainer.step}", flush=True)
    alone = multiprocessing.parent_process() is None
    log = tensorboard and tensorboard / out.name  # a member's own run of the ensemble's logs
    _run_with_progress(trainer, out, f"{out.name}  ", alone, eval_samples, log)


def _run_with_progress(
    trainer: Trainer,
    out: Path,
    label: str = "",
    draw_bar: bool = True,
    eval_samples: int = 0,
    tensorboard: Path | None = None,
) -> None:
    """fit, with a progress bar on a terminal, a line per evaluation (and eval_samples names, and a
    TensorBoard log in `tensorboard`), and Ctrl-C as a request to save and stop."""
    from tqdm import tqdm

    stop = {"requested": False}

    def on_sigint(signum, frame):
        if stop["requested"]:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        stop["requested"] = True

    # a bar on a terminal; in a log file, a pipe or CI, only the evaluation lines (a bar's carriage-return
    # updates would be thousands of lines there)
    drawn = draw_bar and trainer.context.is_main and sys.stderr.isatty()
    bar = _Lines()
    if drawn:
        bar = tqdm(total=trainer.config.steps, initial=trainer.step, unit="step", dynamic_ncols=True, file=sys.stderr)

    def on_step(step, loss, positions_per_second):
        bar.update(1)
        if drawn and step % 25 == 0:  # float(loss) waits for the device: only for a bar someone sees
            bar.set_postfix(loss=f"{float(loss):.4f}", pos_per_s=f"{positions_per_second:,.0f}", refresh=False)

    def on_eval(record):
        bar.write(
            f"{label}step {record['step']:>7}  train {record['train_loss']:.4f}  val {record['val_loss']:.4f}  "
            f"lr {record['lr']:.2e}  {record['positions_per_second']:,.0f} positions/s"
        )
        if log is not None:
            log(record)
        if eval_samples:  # seeded on their own, in eval mode: training's random numbers are untouched
            drawn_names = stream_sampled(trainer.model, trainer.splits.vocab, sample_config)
            bar.write(f"{label}  samples: {', '.join(f'{name}{seen.mark(name).strip()}' for name, _ in drawn_names)}")
        sys.stdout.flush()  # a log file gets each line when it is made

    if eval_samples:  # the marks' sets and the config, once for the run, not at each evaluation
        seen = trainer.splits.seen
        sample_config = SampleConfig(n=eval_samples, seed=0, cut_at=default_cut_at(seen.train))
    log = TensorBoardLog(tensorboard) if tensorboard is not None and trainer.context.is_main else None
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        fit(trainer, out, on_step, on_eval, should_stop=lambda: stop["requested"])
    finally:
        signal.signal(signal.SIGINT, previous)
        bar.close()
        if log is not None:
            log.close()


class _Lines:
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


def _print_trained(trained: runs.Trained, out: Path) -> None:
    """The final figures of a run's best checkpoint (model.pt), or of an ensemble, and what was written."""
    metrics, trainer = trained.metrics, trained.trainer
    if trainer is None:  # an ensemble
        config = metrics["train_config"]
        alone = ", ".join(f"{m['val_loss']:.4f}" for m in metrics["members"])
        print(
            f"ensemble: train {metrics['train_loss']:.4f}  val {metrics['val_loss']:.4f}  over the whole splits  "
            f"({metrics['params']:,} parameters in "
            f"{config['members']} models of {config['steps']} steps, {config['members_at_once']} at a time, "
            f"{metrics['seconds']:.0f} s of training; val of each alone {alone})"
        )
        _print_test(metrics)
        print(
            f"wrote {out / 'model.pt'} (the ensemble) and {out / 'metrics.json'}; each model's run is in "
            f"{out / 'member-N'}"
        )
        return
    if "stopped" in metrics:
        print(f"stopped at step {trainer.step} of {trainer.config.steps}: {metrics['stopped']}")
    # the step lines' train figure is the mean of the batches since the evaluation before; these are
    # model.pt's, over every item of each split
    print(
        f"best model (step {metrics['best_step']}): train {metrics['train_loss']:.4f}  val {metrics['val_loss']:.4f}  "
        f"over the whole splits  ({metrics['params']:,} parameters, {trainer.step} steps, "
        f"{_epochs(trainer.epochs)}, {trainer.seconds:.0f} s)"
    )
    _print_test(metrics)
    written = ["model.pt (the best)", "last.pt (for --resume)", "metrics.jsonl", "metrics.json", "loss.png"]
    print(f"wrote {', '.join(str(out / name) for name in written)}")


def _print_test(metrics: dict) -> None:
    if "test_loss" in metrics:
        print(f"test {metrics['test_loss']:.4f}  (the test split, evaluated once, at the end)")


def _print_samples(model, vocab: Vocab, seen: Seen, n_samples: int) -> None:
    """A few names at the end of training, marked as the data holds them."""
    if n_samples:
        print(f"samples ({MARKS}):")
        config = SampleConfig(n=n_samples, seed=0, cut_at=default_cut_at(seen.train))
        _print_names(model, vocab, seen, config)


def _epochs(epochs: float) -> str:
    """'20 epochs', '2.5 epochs', '0.14 epochs': few enough digits to read, enough to see under one."""
    return f"{epochs:.0f} epochs" if epochs >= 10 else f"{epochs:.2g} epochs"


def _print_names(model, vocab: Vocab, seen: Seen, config: SampleConfig, labels=None, constraints=None) -> None:
    """Printed a batch at a time, while the rest are made; a name cut at --cut-at is no name of the
    data. Under constraints, every name printed is one the model ended."""
    if constraints is not None and constraints.any():
        names = stream_constrained(model, vocab, config, constraints, seen, labels)
    else:
        names = stream_sampled(model, vocab, config, labels=labels)
    for name, ended in names:
        mark = seen.mark(name) if ended else f"  (cut at {_cut_at(name, config)})"
        print(f"{name or '(empty)'}{mark}")


def _cut_at(name: str, config: SampleConfig) -> str:
    """Why a name stopped before the model ended it: --cut-at, or the most the model can read."""
    return f"--cut-at {config.cut_at}" if len(name) == config.cut_at else f"the model's longest, {len(name)}"


def _experiment_data(args) -> tuple[Splits, str]:
    data = args.data or TrainConfig.data
    return Splits.read(data), data


def _print_run(name: str, metrics: dict) -> None:
    print(
        f"{name}: train {metrics['train_loss']:.4f}  val {metrics['val_loss']:.4f}  "
        f"({metrics['params']:,} parameters, {metrics['seconds']:.0f} s)",
        flush=True,
    )


def cmd_lecture(args) -> int:
    splits, data = _experiment_data(args)
    out = Path(args.out)
    scale = presets.QUICK_FACTOR if args.quick else 1
    rows = experiments.lecture_table(splits, data, out, _run_with_progress, scale, args.seed)
    for row in rows:
        _print_run(row["preset"], row)
    print((out / "results.md").read_text(encoding="utf-8"))
    return 0


def _budgets(text: str) -> tuple[float, ...]:
    try:
        budgets = tuple(sorted(float(part) for part in text.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds separated by commas, such as 30,60, got {text!r}") from None
    if not all(0 < b < float("inf") for b in budgets):
        raise argparse.ArgumentTypeError(f"every budget must be a positive number of seconds, got {text!r}")
    return budgets


def cmd_race(args) -> int:
    splits, data = _experiment_data(args)
    out = Path(args.out)
    for row in experiments.race(splits, data, out, _run_with_progress, args.budgets, seed=args.seed):
        print(
            f"{row['entrant']}: {row['params']:,} parameters, {row['positions_per_second']:,.0f} positions/s",
            flush=True,
        )
    print((out / "results.md").read_text(encoding="utf-8"), end="")
    print(f"wrote {out / 'results.md'}, {out / 'results.json'} and {out / 'race.png'}")
    return 0


def cmd_sweep(args) -> int:
    config = experiments.SweepConfig.load(args.config)
    splits, data = _experiment_data(args)
    out = Path(args.out)
    rows = experiments.sweep(config, splits, data, out, _run_with_progress, on_result=_print_run)
    print(experiments.summary_table(rows), end="")
    print(f"wrote {out / 'results.jsonl'} and {out / 'summary.md'}")
    return 0


def cmd_serve(args) -> int:
    import uvicorn

    from .server import create_app, listening_socket  # here: FastAPI's import costs every other command nothing

    if not 0 <= args.port < 65536:
        raise ValueError(f"--port must be in 0..65535, got {args.port}")
    if not args.window_ms >= 0:
        raise ValueError(f"--window-ms must be a number of milliseconds, not negative, got {args.window_ms}")
    checkpoints = _checkpoints(args)
    app = create_app(checkpoints, args.window_ms / 1000, not args.no_batching)
    listener = listening_socket(args.host, args.port)  # bound here, so that its port can be printed
    port = listener.getsockname()[1]
    print(
        f"serving {', '.join(map(str, checkpoints))} on http://{args.host}:{port}/ (its API: /docs); Ctrl-C stops",
        flush=True,
    )
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[listener])
    return 0


def cmd_ship(args) -> int:
    into = Path(args.into)
    for name, row in shipped.ship(_run_with_progress, Path(args.out), into).items():
        print(f"{name}: train {row['train_loss']:.4f}  val {row['val_loss']:.4f}  ({row['params']:,} parameters)")
    written = ", ".join(str(shipped.path_of(name, into)) for name in shipped.SHIPPED)
    print(f"wrote {written} and {into / shipped.RECORD}")
    return 0


def _checkpoints(args) -> list[Path]:
    """--checkpoint's paths; without one, the model that `train` wrote, or before any training the
    shipped one."""
    given = args.checkpoint or [DEFAULT_CHECKPOINT if Path(DEFAULT_CHECKPOINT).exists() else shipped.DEFAULT]
    return [shipped.resolve(spec) for spec in given]


def _load(args, device: str | torch.device = "cpu"):
    """The model of --checkpoint, or of several as one ensemble (load_models)."""
    return load_models(_checkpoints(args), device)


def cmd_sample(args) -> int:
    exclude = () if args.exclude is None else tuple(read_words(args.exclude))
    constraints = Constraints(**_given(args, Constraints), exclude=exclude)
    model, vocab, checkpoint = _load(args)
    seen = Seen.of_checkpoint(checkpoint)
    config = SampleConfig(**{"cut_at": default_cut_at(seen.train), **_given(args, SampleConfig)})
    vocab.encode(config.prefix)  # an unknown prefix character is an error before anything is printed
    constraints.check(config, vocab)
    columns = label_columns(checkpoint)
    if args.label and columns is None:
        raise no_labels_error("--label")
    labels = columns.parse(args.label) if columns is not None else None  # (K,), unknown where not given
    try:
        _print_names(model, vocab, seen, config, labels, constraints)
    except TooRare as e:  # the names found are printed: say why there are not more
        print(f"wavenet-names sample: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_score(args) -> int:
    model, vocab, checkpoint = _load(args, resolve_device(args.device))
    if args.items == "-":
        if sys.stdin.isatty():  # typed, not piped: say why nothing happens yet
            print("reading items from standard input, one per line; end with Ctrl-D", file=sys.stderr)
        source, data = "standard input", parse_words(sys.stdin.buffer.read(), "standard input")
    else:
        source, data = args.items, read_items(args.items)
    words, labels, shown = _items_and_labels(data, label_columns(checkpoint), source)
    if args.lowercase:
        words = [word.lower() for word in words]
    unknown = [i for i, word in enumerate(words) if not vocab.knows(word)]
    if unknown and not args.skip_unknown:
        first = words[unknown[0]]
        raise DataError(
            f"{source}: items with a character the model does not know: {len(unknown):,} of {len(words):,}, the "
            f"first {first[:40]!r} ({''.join(sorted(set(first) - set(vocab.chars)))!r}); "
            "pass --lowercase or --skip-unknown"
        )
    if unknown:
        kept = sorted(set(range(len(words))) - set(unknown))
        words, shown = [words[i] for i in kept], [shown[i] for i in kept]
        labels = None if labels is None else labels[kept]
    for word, fields, loss in zip(words, shown, stream_scores(model, vocab, words, labels), strict=True):
        print(f"{loss:.4f}\t{word}{fields}")  # printed as they come
    if unknown:
        total = len(unknown) + len(words)
        print(f"skipped {len(unknown):,} of {total:,} items: a character the model does not know", file=sys.stderr)
    return 0


def _items_and_labels(data: list[str] | Table, columns: LabelColumns | None, source: str):
    """The items of a list or a table; their labels (N, K) for a conditional model (unknown for a list's
    items, None for a model without labels); and each row's label fields as printed after its item."""
    if not isinstance(data, Table):
        return data, None, [""] * len(data)
    labels = columns.encode(data, source) if columns is not None else None
    return data.items, labels, ["".join(f"\t{field}" for field in row) for row in data.fields]


def cmd_evaluate(args) -> int:
    device = resolve_device(args.device)
    model, vocab, checkpoint = _load(args, device)
    data = args.data or training_data(checkpoint)
    columns = label_columns(checkpoint)  # a table's labels are read for a conditional model
    splits = Splits.read(data, vocab, columns, use_labels=columns is not None)  # every character must be known
    batches = splits.batches(args.split, model, device)  # (an empty split is its own error)
    trained_on = checkpoint.get("data_fingerprint")
    if args.split != "all" and trained_on is not None and splits.fingerprint != trained_on:
        raise DataError(
            f"{data}: not the data this model was trained on (its items or their order differ), so its "
            f"{args.split} split is not the model's; --split all evaluates every item of it"
        )
    print(f"{args.split} {evaluate(model, batches):.4f}")
    return 0
