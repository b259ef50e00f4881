"""The command line's arguments: a flag for each option of the config dataclasses (options.option),
made here, and the dataclasses of the options that only the command line takes.

Every flag defaults to None, so that an option not given is told from one given its default value:
given() returns the options given, by name, and the library's dataclasses supply the rest. The
model's options are every registered kind's (models.KINDS), merged by name: --n-embd is one flag,
whose help gives each kind's default.
"""

import argparse
import typing
from dataclasses import dataclass

from . import race, shipped
from .choosing import SampleConfig
from .configuration import TrainConfig
from .constraints import Constraints
from .devices import DEVICE_HELP
from .models import KINDS
from .options import check_at_least, default, flag, listing, option, option_fields
from .presets import QUICK_FACTOR


class Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def add_options(parser, cls) -> None:
    """A flag (or an argument) for each option field of the config dataclass `cls`."""
    for f in option_fields(cls):
        _add(parser, f, _help(f, default(f)))


def _add(parser, f, help: str) -> None:
    """The flag of option field `f`: a switch for a bool, repeatable, or of its type (or its parse)."""
    meta = f.metadata
    spec = {"default": None, "help": help}
    if f.type is bool:
        spec["action"] = argparse.BooleanOptionalAction if meta["negatable"] else "store_true"
    elif meta["repeatable"]:
        spec["metavar"] = meta["metavar"]
        spec["action"] = "append"
    else:
        types = (int, float, str)
        spec["type"] = meta["parse"] or next(t for t in types if t is f.type or t in typing.get_args(f.type))
        spec["choices"], spec["metavar"] = meta["choices"], meta["metavar"]
    if meta["positional"]:
        parser.add_argument(f.name, nargs="?", **spec)
    else:
        parser.add_argument(flag(f), dest=f.name, **spec)


def _help(f, value, by_kind: str = "") -> str:
    """An option's help, with its default (`value`, or what differs by kind, `by_kind`)."""
    text = f.metadata["help"]
    if not f.metadata["show_default"] or f.type is bool or (value is None and not by_kind):
        return text
    return f"{text} (default {by_kind or value})"


def add_model_options(parser) -> None:
    """--model, and every registered kind's options: one flag per name, in a group of its own when
    one kind alone reads it."""
    summaries = "; ".join(f"{kind.name}: {kind.summary}" for kind in KINDS.values())
    shared = parser.add_argument_group("model")
    shared.add_argument("--model", dest="model", default=None, choices=list(KINDS), help=f"{summaries} (default conv)")
    owners: dict[str, list] = {}  # option name -> [(kind, field)]
    for kind in KINDS.values():
        for f in option_fields(kind.options):
            owners.setdefault(f.name, []).append((kind, f))
    groups = {}
    for name, of in owners.items():
        types = {f.type for _, f in of}
        if len(types) > 1:
            raise TypeError(f"option {name} is of several types: {', '.join(f'{k.name} {f.type}' for k, f in of)}")
        if len(of) == 1:
            kind = of[0][0]
            group = groups.setdefault(kind.name, parser.add_argument_group(f"{kind.name} model only"))
            _add(group, of[0][1], _help(of[0][1], default(of[0][1])))
        else:
            _add(shared, of[0][1], _merged_help(of))


def _merged_help(of: list) -> str:
    """The help of an option that several kinds read: each kind's words and default where they differ."""
    helps: dict[str, list[str]] = {}
    defaults: dict[object, list[str]] = {}
    for kind, f in of:
        helps.setdefault(f.metadata["help"], []).append(kind.name)
        defaults.setdefault(default(f), []).append(kind.name)
    if len(helps) == 1:
        text = next(iter(helps))
    else:
        text = "; ".join(f"{listing(kinds)}: {words}" for words, kinds in helps.items())
    readers = "" if len(of) == len(KINDS) else f" ({listing([kind.name for kind, _ in of])})"
    if of[0][1].type is bool or not of[0][1].metadata["show_default"]:
        return text + readers
    if len(defaults) == 1:
        return f"{text}{readers} (default {next(iter(defaults))})"
    return f"{text} (default {'; '.join(f'{listing(kinds)} {value}' for value, kinds in defaults.items())})"


def add_train_options(parser) -> None:
    """TrainConfig's options, each with its default and the kinds whose recipe differs."""
    group = parser.add_argument_group("training")
    for f in option_fields(TrainConfig):
        by_value: dict[object, list[str]] = {}
        for kind in KINDS.values():
            value = kind.recipe.get(f.name, default(f))
            if value != default(f):
                by_value.setdefault(value, []).append(kind.name)
        by_kind = "; ".join([str(default(f)), *(f"{listing(kinds)} {value}" for value, kinds in by_value.items())])
        _add(group, f, _help(f, default(f), by_kind if by_value else ""))


def given(args, *classes) -> dict:
    """The options of these dataclasses given on the command line, by name (a repeatable one as a tuple)."""
    names = [f.name for cls in classes for f in option_fields(cls)]
    values = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    return {name: tuple(value) if isinstance(value, list) else value for name, value in values.items()}


def model_options(args) -> dict:
    """The model's options given: --model and every kind's."""
    chosen = {} if args.model is None else {"model": args.model}
    return {**chosen, **given(args, *(kind.options for kind in KINDS.values()))}


def flags(*classes) -> dict[str, str]:
    """How the command line spells each option, by name: for the errors the library raises about one."""
    spelled = {"model": "--model"}
    classes = (*classes, TrainConfig, SampleConfig, Constraints, *(kind.options for kind in KINDS.values()))
    for cls in classes:
        spelled.update({f.name: flag(f) for f in option_fields(cls) if not f.metadata["positional"]})
    return spelled


# --- the options that only the command line takes --------------------------------------------------


@dataclass(frozen=True)
class Checkpoints:
    checkpoint: tuple[str, ...] = option(
        (),
        f"a checkpoint file, a run's directory, or a shipped model: {', '.join(shipped.SHIPPED)} (default: "
        f"{shipped.TRAINED} if there is one, else the shipped {shipped.DEFAULT}); given more than once, the "
        "models as one ensemble, their next-character distributions averaged",
        metavar="FILE",
        repeatable=True,
        show_default=False,
    )


@dataclass(frozen=True)
class Onnx:
    onnx: str | None = option(
        None,
        "a directory that `export` wrote, run by onnxruntime in place of PyTorch (sample: the same seed "
        "gives the same names; score: the same scores); needs the onnx extra",
        metavar="DIR",
    )


@dataclass(frozen=True)
class Exporting:
    out: str = option("out/onnx", "the directory to write step.onnx, full.onnx and seen.json.gz into", metavar="DIR")


@dataclass(frozen=True)
class Report:
    """What `train` prints besides its evaluations."""

    samples: int = option(10, "names to print at the end")
    eval_samples: int = option(
        0,
        "also print N names at each evaluation, from one seed, so that each line shows the same draws "
        "from a better model; training draws the same numbers either way",
        metavar="N",
    )
    tensorboard: str | None = option(
        None,
        "also log each evaluation's train and val loss, learning rate and positions/s for TensorBoard "
        "(tensorboard --logdir DIR); needs the tensorboard extra",
        metavar="DIR",
    )

    def __post_init__(self):
        check_at_least(self, 0, "samples", "eval_samples")


@dataclass(frozen=True)
class Labelling:
    label: tuple[str, ...] = option(
        (),
        "a conditional model's label for every name, e.g. --label sex=F --label decade=1920; a label not "
        "given is unknown",
        metavar="COLUMN=VALUE",
        repeatable=True,
        show_default=False,
    )


@dataclass(frozen=True)
class Exclusion:
    exclude: str | None = option(
        None, "a file of names to leave out, one per line, whatever their case", metavar="FILE"
    )


@dataclass(frozen=True)
class Evaluation:
    data: str | None = option(None, "the data file (default: the one the checkpoint was trained on)")
    split: str = option(
        "val",
        "the lecture's split of the data; all: every item, e.g. of a file held out from training",
        choices=("train", "val", "test", "all"),
    )
    device: str = option("auto", DEVICE_HELP)


@dataclass(frozen=True)
class Scoring:
    items: str = option(
        "-",
        "text file, one item per line, or a .tsv or .csv table, whose labels a conditional model reads "
        "(-: standard input, one item per line)",
        positional=True,
    )
    lowercase: bool = option(False, "lowercase each item before it is scored")
    skip_unknown: bool = option(
        False,
        "skip each item with a character the model does not know, and say how many were skipped (without "
        "it, one such item is an error, before any score)",
    )
    device: str = option("auto", DEVICE_HELP)


@dataclass(frozen=True)
class Shipping:
    out: str = option("out/shipped", "directory for the runs, each shipped model's teacher and student, resumable")
    into: str = option(
        str(shipped.DIRECTORY),
        "where to write the slim checkpoints and trained.json (default: the package's own)",
        show_default=False,
    )


def budgets(text: str) -> tuple[float, ...]:
    """--budgets: seconds separated by commas, each positive."""
    try:
        values = tuple(sorted(float(part) for part in text.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds separated by commas, such as 30,60, got {text!r}") from None
    if not all(0 < b < float("inf") for b in values):
        raise argparse.ArgumentTypeError(f"every budget must be a positive number of seconds, got {text!r}")
    return values


def names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


@dataclass(frozen=True)
class Experiment:
    """What every experiment takes."""

    data: str | None = option(None, "the data file (default: data/names.txt)")


@dataclass(frozen=True)
class Lecture:
    quick: bool = option(False, f"every step count divided by {QUICK_FACTOR}: the table in minutes")
    out: str = option("out/lecture", "directory for the runs and results.md")
    seed: int = option(42, "the runs' seed")


@dataclass(frozen=True)
class Race:
    budgets: tuple[float, ...] = option(
        race.RACE_BUDGETS,
        "seconds of training, comma-separated: the table's columns; each kind trains one run per budget, "
        f"scheduled by it (default {','.join(map(str, race.RACE_BUDGETS))})",
        parse=budgets,
        show_default=False,
    )
    seeds: int = option(
        race.RACE_SEEDS,
        f"at {' and '.join(f'{b} s' for b in race.SEEDED_BUDGETS)}, conv and the best other kind train from this "
        "many seeds, for the mean and spread of each",
    )
    models: tuple[str, ...] | None = option(
        None, "the kinds that race, comma-separated (default: every kind)", parse=names, metavar="KINDS"
    )
    out: str = option("out/race", "directory for the runs, results.md and race.png")
    seed: int = option(42, "the runs' seed")

    def __post_init__(self):
        check_at_least(self, 1, "seeds")


@dataclass(frozen=True)
class Sweep:
    config: str | None = option(
        None, "a JSON sweep file (its format: help(wavenet_names.experiments.SweepConfig))", show_default=False
    )
    out: str = option("out/sweep", "directory for the runs and results.jsonl")

    def __post_init__(self):
        if self.config is None:
            raise ValueError("--config is required: a JSON sweep file")
