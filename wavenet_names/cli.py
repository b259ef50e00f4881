"""wavenet-names: the command line, a table from each command to the library function it calls
(COMMANDS). The only module that prints, with console.py.

Bad input, and running out of memory, end in one line on stderr and exit status 2. Ctrl-C during
training saves and exits 130; anywhere else it exits 130 too, with one line and no traceback.
"""

import argparse
import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import distributed, experiments, race, runs
from .arguments import (
    Checkpoints,
    Evaluation,
    Experiment,
    Exporting,
    Lecture,
    Onnx,
    Race,
    Report,
    Scoring,
    Shipping,
    Sweep,
    add_model_options,
    add_train_options,
    flags,
    model_options,
)
from .checkpoint import CheckpointError
from .choosing import SampleConfig
from .configuration import TrainConfig
from .console import (
    allocation_failed,
    is_main_process,
    print_run,
    print_trained,
    run_member,
    run_with_progress,
    say_restarted,
    version,
)
from .constraints import Constraints
from .devices import resolve_device
from .fitting import TrainingInterrupted
from .flags import Exclusion, Labelling, Parser, add_options, given
from .labels import read_items
from .loading import LoadedModel
from .logs import TensorBoardLog
from .onnx_cli import load_export
from .options import OptionError
from .presets import QUICK_FACTOR
from .printing import print_drawn, print_sampled, said
from .scoring import ScoredItems, evaluate_data
from .serving import ServeConfig
from .splits import Splits
from .words import DataError, parse_words

TRAINING_COMMANDS = ("train", "experiment")  # what a second Ctrl-C cuts short, and a smaller batch helps


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    status = _run(args)
    if distributed.joined():  # a worker of torchrun's, its run saved and its group left
        distributed.leave(status)
    return status


def _run(args) -> int:
    """args' command; its exit status, with bad input and Ctrl-C said in one line."""
    try:
        return args.run(args)
    except TrainingInterrupted as e:
        if is_main_process():
            again = "the same command" if args.command == "experiment" else f"train --out {e.out} --resume"
            print(f"\n{e}; continue with: wavenet-names {again}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # Ctrl-C while sampling or evaluating, or a second one while training
        if is_main_process():
            # a second Ctrl-C while training: it stops without saving
            unsaved = "; nothing saved since the last evaluation" if args.command in TRAINING_COMMANDS else ""
            print(f"\nwavenet-names {args.command}: interrupted{unsaved}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `wavenet-names sample -n 100000 | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that exit's flush is quiet too
        return 141  # 128 + SIGPIPE, what a shell reports for a command stopped by a closed pipe
    except (DataError, CheckpointError, ValueError, OSError) as e:
        # an option's error names its field (n_layers), as the library's argument; here it is a flag (--n-layers)
        message = e.spelled(_flags()) if isinstance(e, OptionError) else said(e)
        if is_main_process():  # under torchrun every rank fails alike: one line, not one per rank
            print(f"wavenet-names {args.command}: error: {message}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        asked = allocation_failed(e)
        if asked is None:  # not the user's to fix: a bug, with its traceback
            raise
        if is_main_process():
            smaller = "; try a smaller --batch-size" if args.command in TRAINING_COMMANDS else ""
            print(f"wavenet-names {args.command}: error: out of memory ({asked}){smaller}", file=sys.stderr)
        return 2


# --- the commands --------------------------------------------------------------------------------


def cmd_train(args) -> int:
    """Train in this process, or as one rank of `torchrun ... -m wavenet_names train` (rank 0 prints)."""
    report = Report(**given(args, Report))
    if report.tensorboard:
        TensorBoardLog.check()  # before any training: a missing package is one line now, not at the first evaluation
    request = runs.Request(options={**model_options(args), **given(args, TrainConfig)}, **given(args, runs.Request))
    reporting = dict(eval_samples=report.eval_samples, tensorboard=report.tensorboard and Path(report.tensorboard))
    runner, member_runner = (functools.partial(f, **reporting) for f in (run_with_progress, run_member))
    trained = runs.train(request, runner, member_runner, on_restart=say_restarted)
    if trained is None:  # a rank of several, not the first
        return 0
    print_trained(trained.metrics, trained.trainer, request.out)
    if report.tensorboard:
        logs = report.tensorboard
        print(f"logged each evaluation for TensorBoard in {logs} (tensorboard --logdir {logs})")
    if report.samples:  # what `sample --seed 0` prints from the model.pt just written
        print_drawn(LoadedModel.load([request.out / "model.pt"]), {"n": report.samples, "seed": 0}, heading=True)
    return 0


def cmd_sample(args) -> int:
    loaded = _onnx(args) if args.onnx is not None else _loaded(args)
    return print_sampled(loaded, args, "wavenet-names sample")


def _onnx(args):
    """The exported model of --onnx, read by onnxruntime (portable.py), which draws as PyTorch does."""
    if _checkpoints(args):
        raise ValueError("--onnx and --checkpoint name two models: give one")
    return load_export(args.onnx)


def cmd_export(args) -> int:
    options = Exporting(**given(args, Exporting))
    try:
        from .export import export  # here: the exporter needs the onnx and onnxscript packages
    except ImportError as e:
        raise ValueError(f"export needs the onnx extra ({e}): pip install 'wavenet_names[onnx]'") from None
    loaded = _loaded(args)
    written = export(loaded, options.out)
    sizes = ", ".join(f"{path.name} ({path.stat().st_size / 1e6:.2f} MB)" for path in written)
    print(f"exported {loaded.title} into {options.out}: {sizes}")
    print(f"sample from it without PyTorch: wavenet-names sample --onnx {options.out} (see docs/onnx.md)")
    return 0


def _checkpoints(args) -> tuple[str, ...]:
    return given(args, Checkpoints).get("checkpoint", ())


def _loaded(args, device="cpu") -> LoadedModel:
    """The model of --checkpoint; without one, the model train wrote or the shipped one, and which of
    them is said on stderr (the output stays the command's own: names, losses)."""
    checkpoints = _checkpoints(args)
    loaded = LoadedModel.load(checkpoints, device)
    if not checkpoints:
        print(f"wavenet-names {args.command}: {loaded.origin()}", file=sys.stderr)
    return loaded


def cmd_evaluate(args) -> int:
    options = Evaluation(**given(args, Evaluation))
    loaded = _onnx(args) if args.onnx is not None else _loaded(args, resolve_device(options.device))
    print(f"{options.split} {evaluate_data(loaded, options.data, options.split):.4f}")
    return 0


def cmd_score(args) -> int:
    options = Scoring(**given(args, Scoring))
    loaded = _onnx(args) if args.onnx is not None else _loaded(args, resolve_device(options.device))
    if options.items == "-":
        if sys.stdin.isatty():  # typed, not piped: say why nothing happens yet
            print("reading items from standard input, one per line; end with Ctrl-D", file=sys.stderr)
        source, data = "standard input", parse_words(sys.stdin.buffer.read(), "standard input")
    else:
        source, data = options.items, read_items(options.items)
    items = ScoredItems.of(loaded, data, source, options.lowercase, options.skip_unknown)
    for word, fields, loss in zip(items.words, items.fields, items.scores(loaded), strict=True):
        print(f"{loss:.4f}\t{word}{fields}")  # printed as they come
    if items.skipped:
        total = f"{items.skipped:,} of {items.skipped + len(items.words):,} items"
        print(f"skipped {total}: a character the model does not know", file=sys.stderr)
    return 0


def cmd_serve(args) -> int:
    from . import hosting, shipped
    from .server import create_app  # here: FastAPI's import costs every other command nothing

    options = ServeConfig(**given(args, ServeConfig))  # checked before the model is loaded
    checkpoints = shipped.checkpoints(_checkpoints(args))
    app = create_app(checkpoints, options)
    listener = hosting.listening_socket(options.host, options.port)  # bound here, so that its port can be printed
    where = f"http://{options.host}:{listener.getsockname()[1]}/ (its API: /docs)"
    print(f"serving {', '.join(map(str, checkpoints))} on {where}; Ctrl-C or SIGTERM drains and stops", flush=True)
    hosting.run(app, listener, options)
    return 0


def cmd_ship(args) -> int:
    from . import shipped

    options = Shipping(**given(args, Shipping))
    into = Path(options.into)
    for name, row in experiments.ship(run_with_progress, Path(options.out), into).items():
        print(f"{name}: train {row['train_loss']:.4f}  val {row['val_loss']:.4f}  ({row['params']:,} parameters)")
    written = ", ".join(str(shipped.path_of(name, into)) for name in shipped.SHIPPED)
    print(f"wrote {written} and {into / shipped.RECORD}")
    return 0


def _experiment(args) -> tuple[Splits, str]:
    data = Experiment(**given(args, Experiment)).data or TrainConfig.data
    return Splits.read(data), data


def cmd_lecture(args) -> int:
    options = Lecture(**given(args, Lecture))
    splits, data = _experiment(args)
    scale = QUICK_FACTOR if options.quick else 1
    for row in experiments.lecture_table(splits, data, Path(options.out), run_with_progress, scale, options.seed):
        print_run(row["preset"], row)
    print((Path(options.out) / "results.md").read_text(encoding="utf-8"))
    return 0


def cmd_race(args) -> int:
    options = Race(**given(args, Race))
    entrants = race.entrants(options.models)  # an unknown kind: one line, before any data is read
    splits, data = _experiment(args)
    out = Path(options.out)
    race.race(splits, data, out, run_with_progress, options.budgets, entrants, options.seed, seeds=options.seeds)
    print((out / "results.md").read_text(encoding="utf-8"), end="")
    print(f"wrote {out / 'results.md'}, {out / 'results.json'} and {out / 'race.png'}")
    return 0


def cmd_sweep(args) -> int:
    options = Sweep(**given(args, Sweep))
    config = experiments.SweepConfig.load(options.config)
    splits, data = _experiment(args)
    out = Path(options.out)
    rows = experiments.sweep(config, splits, data, out, run_with_progress, on_result=print_run)
    print(experiments.summary_table(rows), end="")
    print(f"wrote {out / 'results.jsonl'} and {out / 'summary.md'}")
    return 0


# --- the table -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """A command: its name, its line of help, the function it runs, and the option dataclasses its
    flags come from; `more` adds flags in groups of their own."""

    name: str
    help: str
    run: Callable[[argparse.Namespace], int]
    options: tuple = ()
    more: Callable[[argparse.ArgumentParser], None] = lambda parser: None


def _train_flags(parser) -> None:
    add_model_options(parser)
    add_train_options(parser)


def _constraint_flags(parser) -> None:
    group = parser.add_argument_group(
        "constraints", "names that break one are drawn again: those kept follow the model's distribution given them"
    )
    add_options(group, Constraints)
    add_options(group, Exclusion)


COMMANDS = (
    Command(
        "train",
        "train a model (with no options: ConvWaveNet on data/names.txt)",
        cmd_train,
        (runs.Request, Report),
        _train_flags,
    ),
    Command(
        "sample",
        "print new names from a checkpoint",
        cmd_sample,
        (Checkpoints, Onnx, Labelling, SampleConfig),
        _constraint_flags,
    ),
    Command(
        "export",
        "write a checkpoint as ONNX graphs, for onnxruntime and other runtimes without PyTorch",
        cmd_export,
        (Checkpoints, Exporting),
    ),
    Command(
        "evaluate",
        "print the mean loss of a checkpoint, or an export (--onnx), over a whole split",
        cmd_evaluate,
        (Checkpoints, Onnx, Evaluation),
    ),
    Command(
        "score",
        "print each item's loss per character: the highest are the least like the training data",
        cmd_score,
        (Scoring, Checkpoints, Onnx),
    ),
    Command(
        "serve",
        "names over HTTP from one model: a JSON API, and a page to get them",
        cmd_serve,
        (Checkpoints, ServeConfig),
    ),
    Command(
        "ship",
        "train the models that the package ships again: for each, --preset max's ensemble, then the "
        "default-size model distilled from it (see docs/cli.md for how long)",
        cmd_ship,
        (Shipping,),
    ),
)
EXPERIMENTS = (
    Command(
        "lecture", "train the lecture's performance log as presets, write a table", cmd_lecture, (Experiment, Lecture)
    ),
    Command(
        "race",
        "train every kind with its own recipe against the clock, on one split; write a table and a plot",
        cmd_race,
        (Experiment, Race),
    ),
    Command("sweep", "train every point of a grid or random search, resumably", cmd_sweep, (Experiment, Sweep)),
)


def _flags() -> dict[str, str]:
    """How the command line spells each option, for the errors the library raises about one."""
    return flags(*(cls for command in COMMANDS + EXPERIMENTS for cls in command.options))


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="wavenet-names", description="A WaveNet-style character-level language model of names.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        _add_command(commands, command)
    experiment = commands.add_parser("experiment", help="the lecture's results table, a race, or a sweep over options")
    kinds = experiment.add_subparsers(dest="experiment", required=True, parser_class=Parser)
    for command in EXPERIMENTS:
        _add_command(kinds, command)
    return parser


def _add_command(subparsers, command: Command) -> None:
    parser = subparsers.add_parser(command.name, help=command.help)
    for cls in command.options:
        add_options(parser, cls)
    command.more(parser)
    parser.set_defaults(run=command.run)
