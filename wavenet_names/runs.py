"""Runs in directories. train() is what `wavenet-names train` does, for the command line and a
notebook alike: it starts a run, resumes one, continues one that torchrun restarted, or trains an
ensemble, and ends with the best model. run() trains one configuration into a directory of its
own, or continues or reads back what is there: what experiments and an ensemble's members are made
of. An ensemble is a run of runs (ensembles.py).

Every run is resumable: running the same thing again finishes what an interruption left.
"""

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from . import budget, distributed, files, finetune
from .checkpoint import label_columns, load_checkpoint, load_model
from .configuration import TrainConfig, changed_settings, same_settings, saved_configs, settings
from .devices import resolve_device
from .ensembles import ENSEMBLE_FILE, run_ensemble
from .files import remove_partial_writes, write_json
from .fitting import Runner, TrainingDiverged, TrainingInterrupted, finish
from .models import ModelConfig, count_params
from .options import OptionError, option
from .presets import PRESET_HELP, TRAIN_PRESETS
from .splits import Splits
from .training import Trainer
from .words import Seen, Vocab


@dataclass(frozen=True)
class Request:
    """What `train` is asked: where, the options given (by name, as its flags: the model's and
    TrainConfig's), a preset's name, and whether to resume or overwrite what `out` holds."""

    out: Path = option(Path("out"), "directory for model.pt, last.pt, loss.png, metrics", parse=Path)
    options: dict = field(default_factory=dict)
    preset: str | None = option(
        None,
        "a tested configuration; options given with it still apply. " + PRESET_HELP,
        choices=tuple(TRAIN_PRESETS),
        show_default=False,
    )
    resume: bool = option(False, "continue the run saved in OUT/last.pt")
    overwrite: bool = option(False, "start afresh even if OUT holds a checkpoint")


@dataclass
class Trained:
    """What train() ends with: the best model (in eval mode) and its figures."""

    metrics: dict  # as metrics.json holds them
    model: nn.Module
    vocab: Vocab
    seen: Seen  # the data's items by split, which samples are marked against
    trainer: Trainer | None = None  # a single run's, at its last step; None for an ensemble


def train(
    request: Request,
    runner: Runner,
    member_runner: Runner | None = None,
    on_restart: Callable[[Trainer, Path], None] | None = None,
) -> Trained | None:
    """Train as `wavenet-names train` does, in this process or as one rank of `torchrun ... -m
    wavenet_names train` (every rank trains on its share of each batch; rank 0 writes, and the other
    ranks return None).

    A new run refuses to replace what request.out holds unless request.overwrite. request.resume
    continues out/last.pt, or an ensemble's runs, with only the options that may change. A worker that
    torchrun restarted continues its job's last.pt by itself, and on_restart(trainer, out) is told.
    runner(trainer, out) trains a Trainer to its end (the CLI's fit with a progress bar);
    member_runner, a function a process can take, trains an ensemble's members (default: runner)."""
    out = request.out
    settings = _settings(request)  # None: a run's --resume, whose settings are in its last.pt
    _check_out(out)
    if settings is not None and settings[1].members > 1:
        return _train_ensemble(request, *settings, member_runner or runner)
    context = distributed.setup(request.options.get("device", "auto"))
    trainer = None
    try:
        trainer = _restarted(out, context)
        if trainer is not None and on_restart is not None:
            on_restart(trainer, out)
        if trainer is None:
            trainer = _resumed(request, context) if request.resume else _started(request, *settings, context)
        if context.is_main:
            remove_partial_writes(out)  # what a process killed mid-write left; only rank 0 writes
        if context.active:
            trainer.distribute(context)
        runner(trainer, out)
        if not context.is_main:
            return None
        try:
            metrics, model = finish(trainer, out)  # on a large list, a minute over the whole training split
        except KeyboardInterrupt:  # every step is saved in last.pt: --resume computes the figures again
            raise TrainingInterrupted(trainer.step, out / "last.pt") from None
        return Trained(metrics, model, trainer.splits.vocab, trainer.splits.seen, trainer)
    finally:
        if trainer is not None and context.active:
            trainer.undistribute()
        distributed.cleanup()


def _settings(request: Request) -> tuple[ModelConfig, TrainConfig] | None:
    """The configs of a new run (a preset's options, then those given), built once; or those of the
    ensemble that --resume continues (out/ensemble.json), which the options given may not change but
    for how many members train at once. None for a single run's --resume."""
    if request.resume and request.preset:
        raise ValueError("--resume continues the saved run; it takes no --preset")
    if not request.resume:
        return settings(request.options, preset=request.preset)
    saved_file = request.out / ENSEMBLE_FILE
    if (request.out / "last.pt").exists() or not saved_file.exists():
        return None  # a single run's --resume
    try:
        saved = json.loads(saved_file.read_text(encoding="utf-8"))
        model_config, config = saved_configs(saved["model"], saved["train_config"])
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(f"{saved_file}: not an ensemble's settings (delete it, or choose another --out)") from None
    given = request.options
    changed = changed_settings((model_config, config), given, may_change=frozenset({"members_at_once"}))
    if changed:
        raise OptionError(changed, "cannot change when an ensemble resumes: its models train alike")
    return model_config, replace(config, members_at_once=given.get("members_at_once", config.members_at_once))


def _started(request: Request, model_config: ModelConfig, config: TrainConfig, context) -> Trainer:
    base = None if config.init is None else finetune.base_checkpoint(config.init)
    if base is not None:  # the base's model
        model_config, config = finetune.fine_tune_settings(base, request.options, request.preset, config.init)
    splits = Splits.read(config.data, use_labels=config.labels)
    if base is not None:  # the base's vocabulary, then the list's new characters (no split depends on it)
        splits = replace(splits, vocab=finetune.grown_vocab(base, splits.vocab.chars[1:], config.init))
    device = _rank_device(resolve_device(config.device), context)
    _refuse_over_earlier(request)  # what an earlier run left goes at the first evaluation
    choice = None
    if budget.chooses(request.options, request.preset, model_config, config):
        model_config, config, choice = budget.choose(request.options, splits, device)  # the size for --max-time
    model_config = model_config.sized_for(splits) if base is None else finetune.sized(model_config, splits, config.init)
    trainer = _new(model_config, config, splits, device, choice, context)
    if base is not None:
        finetune.start_from(trainer.model, base, splits.label_columns)
        trainer.base = finetune.record(base, config.init)
    return trainer


def _new(
    model_config: ModelConfig,
    config: TrainConfig,
    splits: Splits,
    device: torch.device,
    choice: budget.Choice | None,
    context: distributed.Context | None = None,
) -> Trainer:
    """A new run's Trainer; with a --max-time choice, its timing already spent, and the line that says why."""
    seconds = 0.0 if choice is None else choice.seconds
    trainer = Trainer(model_config, config, splits, device, seconds=seconds, context=context or distributed.Context())
    trainer.chosen = None if choice is None else choice.line()
    return trainer


def _resumed(request: Request, context) -> Trainer:
    return _continued(load_checkpoint(request.out / "last.pt"), context, request.options)


def _restarted(out: Path, context: distributed.Context) -> Trainer | None:
    """The run in out/last.pt, when this process is a worker that torchrun started again, in the same
    job, after a failure or a change of membership: the checkpoint holds the job's run id (see
    distributed.Context). Otherwise None, and the run starts as asked, refusing to overwrite another."""
    if context.run_id is None or not (out / "last.pt").is_file():
        return None
    checkpoint = load_checkpoint(out / "last.pt")
    return _continued(checkpoint, context) if checkpoint.get("run_id") == context.run_id else None


def _continued(checkpoint: dict, context: distributed.Context, overrides: dict | None = None) -> Trainer:
    """The saved run, on as many ranks as `context` has, on its own data; `overrides` (options by name)
    changes the options that may change, and Trainer.from_checkpoint refuses the rest."""
    overrides = overrides or {}
    saved = checkpoint["train_config"]
    columns = label_columns(checkpoint)
    splits = Splits.read(saved["data"], Vocab(tuple(checkpoint["vocab"])), columns, use_labels=columns is not None)
    device = _rank_device(resolve_device(overrides.get("device", saved["device"])), context)
    return Trainer.from_checkpoint(checkpoint, splits, device, overrides, context)


def _rank_device(device: torch.device, context: distributed.Context) -> torch.device:
    return torch.device("cuda", context.local_rank) if device.type == "cuda" and context.active else device


RUN_FILES = ("model.pt", "last.pt", ENSEMBLE_FILE, "metrics.json", "metrics.jsonl", "loss.png")  # what a run writes


def _refuse_over_earlier(request: Request) -> None:
    """A new run does not replace what out holds (a run, finished or not, an ensemble's, or only its
    figures: metrics.json and loss.png with their checkpoints moved away) unless told to."""
    out = request.out
    held = [f for f in RUN_FILES if (out / f).exists()]
    if request.overwrite or not held:
        return
    if {"model.pt", "last.pt", ENSEMBLE_FILE} & set(held):
        raise ValueError(
            f"{out} already holds a checkpoint: continue it with --resume, or pass --overwrite, or choose another --out"
        )
    raise ValueError(f"{out} already holds a run's {held[0]}: pass --overwrite to replace it, or choose another --out")


def _check_out(out: Path) -> None:
    """Before the first step, not after the last: --out can be written, and is not a file system's root
    (where a run would leave its five files among the system's)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: is a file; --out names a directory")
    if out.resolve() == Path(out.resolve().anchor):
        raise ValueError(f"--out {out}: the root of a file system; choose a directory of the run's own")
    files.check_writable(out, "--out")


def _train_ensemble(request: Request, model_config: ModelConfig, config: TrainConfig, runner: Runner) -> Trained:
    """An ensemble's models, each a run of its own (run_ensemble), then the ensemble as one model."""
    if distributed.launched_ranks() > 1:  # under torchrun: every rank refuses alike
        raise ValueError("--members trains its models in processes of its own; run it without torchrun")
    out = request.out
    splits = Splits.read(config.data, use_labels=config.labels)
    if not request.resume:
        _refuse_over_earlier(request)
    for directory in [out, *out.glob("member-*")]:
        if directory.is_dir():
            remove_partial_writes(directory)
    fresh = request.overwrite and not request.resume
    try:
        metrics = run(model_config.sized_for(splits), config, splits, out, runner, fresh=fresh)
    except TrainingInterrupted as e:  # the ensemble, not the member, is what --resume continues
        raise TrainingInterrupted(e.step, e.path, out) from None
    if "diverged" in metrics:
        raise ValueError(metrics["diverged"])
    model, vocab, _ = load_model(out / "model.pt")
    return Trained(metrics, model, vocab, splits.seen)


def run(
    model_config: ModelConfig,
    config: TrainConfig,
    splits: Splits,
    out: Path,
    runner: Runner,
    fresh: bool = False,
    choice: budget.Choice | None = None,
) -> dict:
    """Train one configuration into `out`, or continue or read back what is there (unless `fresh`:
    start afresh over it). An ensemble (config.members > 1) is a run of runs: see
    ensembles.run_ensemble. choice: how --max-time chose this size (budget.choose), whose timing
    counts in the run's time. Returns metrics."""
    finished = None if fresh else _read_back(out, model_config, config)
    if finished is not None:
        return finished
    if config.members > 1:
        return run_ensemble(model_config, config, splits, out, runner, run, fresh)
    device = resolve_device(config.device)
    if not fresh and (out / "last.pt").exists():
        checkpoint = load_checkpoint(out / "last.pt", map_location=device)
        _check_same(checkpoint["model_config"], checkpoint["train_config"], model_config, config, out)
        trainer = Trainer.from_checkpoint(checkpoint, splits, device)
    else:
        trainer = _new(model_config, config, splits, device, choice)
    try:
        runner(trainer, out)
    except TrainingDiverged as e:  # a point of a sweep with too high a learning rate: a row of nan, not the end
        metrics = {
            "train_loss": math.nan,
            "val_loss": math.nan,
            "steps": e.step,
            "seconds": round(trainer.seconds, 2),
            "params": count_params(trainer.model),
            "model": model_config.saved(),
            "train_config": asdict(config),
            "diverged": str(e),
        }
        write_json(metrics, out / "metrics.json")  # done: a resumed sweep reads it back, as any finished run
        return metrics
    return finish(trainer, out)[0]


def _read_back(out: Path, model_config: ModelConfig, config: TrainConfig) -> dict | None:
    """The metrics of the finished run (or ensemble) in `out`, if there is one; one of other settings
    is refused."""
    if not (out / "metrics.json").exists():
        return None
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    _check_same(metrics["model"], metrics["train_config"], model_config, config, out)
    return metrics


def _check_same(saved_model: dict, saved_train: dict, model_config: ModelConfig, config: TrainConfig, out: Path):
    if not same_settings(saved_configs(saved_model, saved_train), model_config, config):
        raise ValueError(f"{out} holds a run with other settings; choose another --out to keep both")
