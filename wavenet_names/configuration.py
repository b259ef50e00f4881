"""Configuration: how a run trains (TrainConfig), every option of `train` by its name, and the one
function that resolves a run's settings from options by name, as `train`'s flags, its presets and
sweep files name them (settings).

A model's options belong to its kind (each model module declares its own); `--model` chooses the
kind; the rest are TrainConfig's. A kind's defaults and its recipe (Kind.recipe) come under the
options given, a preset's under those.
"""

import math
from dataclasses import asdict, dataclass

from .data import NAMES_TXT
from .devices import DEVICE_HELP, parse_device
from .models import KINDS, ModelConfig, kind_named
from .options import OptionError, check_at_least, check_choices, option, option_fields
from .precision import PRECISIONS
from .presets import TRAIN_PRESETS
from .splits import Facts

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")


@dataclass
class TrainConfig:
    """How a run trains. The defaults are ConvWaveNet's; a model kind may have its own (Kind.recipe)."""

    data: str = option(
        str(NAMES_TXT),
        "text file, one item per line, or a .tsv or .csv table with a header row: the "
        "items, then label columns (default: data/names.txt, 32,469 US baby names of 2017, shipped "
        "with the package; data/names-by-decade.tsv labels names with sex and decade)",
        show_default=False,
    )
    labels: bool = option(
        True,
        "train on a table's label columns too: a conditional model, which `sample "
        "--label` steers; --no-labels: on its items alone",
        negatable=True,
    )
    steps: int | None = option(
        4000,
        "optimizer steps; with --max-time alone, as many as the time holds, and with both, the run "
        "ends, and its learning rate's schedule with it, at whichever comes first",
        resumable=True,
    )
    batch_size: int = option(128, "names per step (conv), or windows (the per-position models)")
    optimizer: str = option("adamw", "AdamW decays weight matrices only; SGD decays nothing", choices=OPTIMIZERS)
    lr: float = option(3e-3, "peak learning rate")
    schedule: str = option(
        "cosine",
        "cosine: warmup, then down to lr/10; step: lr/10 for the last quarter "
        "(the lecture's); constant: warmup, then lr",
        choices=SCHEDULES,
    )
    warmup: int = option(100, "linear warmup steps (cosine and constant)")
    weight_decay: float = option(0.1, "AdamW weight decay")
    seed: int = option(42, "seed for initialisation, batches and dropout")
    device: str = option("auto", DEVICE_HELP, resumable=True)
    eval_every: int = option(500, "evaluate on the validation split every N steps", resumable=True)
    report_test: bool = option(False, "evaluate the test split once, at the end (choose models by val, never by test)")
    members: int = option(
        1,
        "train this many models alike, from seeds seed, seed+1000, seed+2000, ..., each a "
        "run of its own in OUT/member-N, and save them as one ensemble in OUT/model.pt: their "
        "next-character distributions averaged",
    )
    members_at_once: int = option(
        1,
        "with --members: train this many at once, each in a process of its own with "
        "an equal share of the CPU threads (on 2 CPU cores, 2 at once train about 1.3x "
        "the positions/s of 1)",
        resumable=True,
    )
    precision: str = option(
        "auto",
        "a training step's arithmetic: fp32; tf32 (CUDA) matmuls; bf16 autocast; "
        "auto: tf32 on a GPU, fp32 on a CPU. Evaluation is always float32",
        choices=PRECISIONS,
        resumable=True,
    )
    compile: bool = option(
        False,
        "torch.compile the training step: slower to start (it compiles for up to a "
        "minute), then faster, most at large batches on a GPU; needs a C++ compiler on a CPU",
        resumable=True,
        negatable=True,
    )
    patience: int | None = option(
        None,
        "stop early when the validation loss has not improved for this many evaluations "
        "(model.pt keeps the best; default: train every step)",
        resumable=True,
        show_default=False,
    )
    max_time: float | None = option(
        None,
        "train for this many seconds, over every resumed session, with an evaluation at the end: "
        "a recipe for the time, whose learning rate's schedule ends when the time does; with no "
        "model options given, it also chooses the model's size for the time (see docs/cli.md) "
        "(default: no limit)",
        resumable=True,
        show_default=False,
    )
    init: str | None = option(
        None,
        "start from a trained model's weights instead of from nothing: a checkpoint, a run's "
        "directory, or a shipped model's name (names); the model's options are the base's, but for "
        "--dropout and --label-dropout; characters and labels the base does not know start new",
        show_default=False,
    )
    teacher: str | None = option(
        None,
        "distil a trained model into this one: a checkpoint, a run's or an ensemble's directory, "
        "trained on the same data; its probabilities over the training split are computed once "
        "(see docs/cli.md)",
        show_default=False,
    )
    distill_temperature: float = option(2.0, "with --teacher: the temperature of both models' probabilities")
    distill_weight: float = option(0.9, "with --teacher: the teacher's share of the loss, the data's the rest")
    checkpoint_every: int | None = option(
        None,
        "also save OUT/last.pt every N steps between evaluations, so "
        "that a crash loses at most N steps (default: at evaluations only)",
        resumable=True,
        show_default=False,
    )

    def __post_init__(self):
        check_choices(self)
        parse_device(self.device)
        check_at_least(self, 1, "steps", "batch_size", "eval_every", "checkpoint_every", "members", "members_at_once")
        check_at_least(self, 1, "patience")
        check_at_least(self, 0, "warmup")
        if self.max_time is not None and not (self.max_time > 0 and math.isfinite(self.max_time)):
            raise OptionError("max_time", f"must be a positive number of seconds, got {self.max_time}")
        if self.init is not None and self.members != 1:
            raise OptionError("members", "trains an ensemble from nothing; with --init, one model trains from the base")
        if not (self.distill_temperature > 0 and math.isfinite(self.distill_temperature)):
            raise OptionError("distill_temperature", f"must be a positive number, got {self.distill_temperature}")
        if not 0 <= self.distill_weight <= 1:
            raise OptionError("distill_weight", f"must be from 0 to 1, got {self.distill_weight}")
        if self.teacher is not None and self.compile:
            raise OptionError("compile", "trains in fixed shapes, without the logits that --teacher needs")
        if self.steps is None and self.max_time is None:
            raise OptionError("steps", "is needed without --max-time: a run ends after its steps or its time")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise OptionError("lr", f"must be a positive number, got {self.lr}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise OptionError("weight_decay", f"must be a number, not negative, got {self.weight_decay}")


def train_options() -> set[str]:
    """The names of TrainConfig's options."""
    return {f.name for f in option_fields(TrainConfig)}


RESUMABLE = frozenset(f.name for f in option_fields(TrainConfig) if f.metadata["resumable"])  # --resume may change


def option_names() -> set[str]:
    """Every option of `train` by name: "model", each registered kind's, and TrainConfig's."""
    return {"model", *train_options(), *(f.name for kind in KINDS.values() for f in option_fields(kind.options))}


def check_names(options: dict) -> None:
    """Refuse a name that is no option of `train` (a sweep file's, a preset's, a library caller's)."""
    unknown = sorted(set(options) - option_names())
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not an option of train")


def settings(options: dict, facts: Facts | None = None, preset: str | None = None) -> tuple[ModelConfig, TrainConfig]:
    """A run's configs from options by name ({"model": "flat", "lr": 0.01, ...}): the preset's, then
    the options given, over the model kind's own defaults and recipe. facts: the data's, where they
    are known (ModelConfig.sized_for adds them later)."""
    given, options = options, with_preset(options, preset)
    check_names(options)
    kind = kind_named(options.get("model", "conv"))
    trains = train_options()
    model = {name: value for name, value in options.items() if name != "model" and name not in trains}
    train = {name: value for name, value in options.items() if name in trains}
    if train.get("max_time") is not None and "steps" not in given:
        train["steps"] = None  # a recipe for the time: a preset's or a kind's steps are a recipe for steps
    return ModelConfig.of(kind.name, facts or Facts(), **model), TrainConfig(**{**kind.recipe, **train})


def with_preset(given: dict, preset: str | None) -> dict:
    """The options a new run trains with, by name: the preset's, then those given."""
    if not preset:
        return given
    options = TRAIN_PRESETS[preset].options
    if given.get("model", options["model"]) != options["model"]:
        raise ValueError(f"--preset {preset} is a {options['model']} model; it takes no --model {given['model']}")
    return {**options, **given}


def changed_settings(
    saved: tuple[ModelConfig, TrainConfig], given: dict, may_change: frozenset = frozenset()
) -> tuple[str, ...]:
    """The one test of "same settings": the options of `given` (by name) whose values differ from a
    saved run's configs (ModelConfig.from_saved reads an earlier version's), but for those in
    `may_change`. An option the saved model's kind does not read differs from it."""
    model_config, config = saved
    values = {"model": model_config.kind, **asdict(model_config.options), **asdict(config)}
    absent = object()
    return tuple(name for name, value in given.items() if name not in may_change and values.get(name, absent) != value)


def same_settings(saved: tuple[ModelConfig, TrainConfig], model_config: ModelConfig, config: TrainConfig) -> bool:
    """Whether a saved run trains what these configs train: how many members trained at once changes
    nothing they learnt, and the data's facts follow from the data."""
    given = {"model": model_config.kind, **asdict(model_config.options), **asdict(config)}
    return not changed_settings(saved, given, may_change=frozenset({"members_at_once"}))


def saved_configs(saved_model: dict, saved_train: dict) -> tuple[ModelConfig, TrainConfig]:
    """A checkpoint's or metrics.json's configs, as this version reads them."""
    return ModelConfig.from_saved(saved_model), TrainConfig(**saved_train)
