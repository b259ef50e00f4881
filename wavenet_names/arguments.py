"""The command line's arguments beyond flags.py's: the model's options, which are every registered kind's
(models.KINDS) merged by name (--n-embd is one flag, whose help gives each kind's default), the
training options, the spelling of every flag for errors, and the dataclasses of the options that only
the command line takes.
"""

import argparse
from dataclasses import dataclass

from . import race, shipped
from .choosing import SampleConfig
from .configuration import TrainConfig
from .constraints import Constraints
from .devices import DEVICE_HELP
from .flags import add_flag, given, help_of
from .models import KINDS
from .options import check_at_least, default, flag, listing, option, option_fields
from .presets import QUICK_FACTOR


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
            add_flag(group, of[0][1], help_of(of[0][1], default(of[0][1])))
        else:
            add_flag(shared, of[0][1], _mergedhelp_of(of))


def _mergedhelp_of(of: list) -> str:
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
        add_flag(group, f, help_of(f, default(f), by_kind if by_value else ""))


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
        "gives the same names; score and evaluate: the same losses); needs the onnx extra",
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
