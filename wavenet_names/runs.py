"""Runs in directories. train() is what `wavenet-names train` does, for the command line and a
notebook alike: it starts a run, resumes one, continues one that torchrun restarted, or trains an
ensemble, and ends with the best model. run() trains one configuration into a directory of its
own, or continues or reads back what is there: what experiments and an ensemble's members are made
of. An ensemble is a run of runs, one per model, one after another or several at once, each in a
process of its own.

Every run is resumable: running the same thing again finishes what an interruption left.
"""

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from . import distributed
from .checkpoint import ensemble_checkpoint, label_columns, load_checkpoint, load_model, save_checkpoint
from .data import Vocab
from .devices import resolve_device
from .ensemble import Ensemble
from .files import remove_partial_writes, write_json, write_text
from .models import KINDS, ModelConfig, count_params
from .options import OptionError
from .presets import TRAIN_PRESETS
from .processes import run_at_once
from .sampling import Seen
from .training import (
    Splits,
    TrainConfig,
    Trainer,
    TrainingDiverged,
    TrainingInterrupted,
    as_fields,
    changed_settings,
    configs,
    evaluate,
    finish,
)

# what runs a Trainer to its end, writing into a directory: the CLI's fit with a progress bar
Runner = Callable[[Trainer, Path], None]


@dataclass(frozen=True)
class Request:
    """What `train` is asked: where, the options given (by name, as its flags), a preset's name, and
    whether to resume or overwrite what `out` holds."""

    out: Path
    options: dict = field(default_factory=dict)
    preset: str | None = None
    resume: bool = False
    overwrite: bool = False


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
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: is a file; --out names a directory")
    settings = _settings(request)  # None: a run's --resume, whose settings are in its last.pt
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
        return configs(_with_preset(request.options, request.preset))
    saved_file = request.out / ENSEMBLE_FILE
    if (request.out / "last.pt").exists() or not saved_file.exists():
        return None  # a single run's --resume
    try:
        saved = json.loads(saved_file.read_text(encoding="utf-8"))
        model_config, config = ModelConfig(**saved["model"]), TrainConfig(**saved["train_config"])
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(f"{saved_file}: not an ensemble's settings (delete it, or choose another --out)") from None
    given = as_fields(request.options)
    changed = changed_settings(saved["model"], saved["train_config"], given, may_change={"members_at_once"})
    if changed:
        raise OptionError(changed, "cannot change when an ensemble resumes: its models train alike")
    return model_config, replace(config, members_at_once=given.get("members_at_once", config.members_at_once))


def _with_preset(given: dict, preset: str | None) -> dict:
    """The options a new run trains with, by name: the preset's, then those given."""
    if not preset:
        return given
    options = TRAIN_PRESETS[preset].options
    if given.get("model", options["model"]) != options["model"]:
        raise ValueError(f"--preset {preset} is a {options['model']} model; it takes no --model {given['model']}")
    return {**options, **given}


def _started(request: Request, model_config: ModelConfig, config: TrainConfig, context) -> Trainer:
    splits = Splits.read(config.data, use_labels=config.labels)
    device = _rank_device(resolve_device(config.device), context)
    _refuse_over_earlier(request)  # what an earlier run left goes at the first evaluation
    return Trainer(sized_for(model_config, splits), config, splits, device, context=context)


def _resumed(request: Request, context) -> Trainer:
    return _continued(load_checkpoint(request.out / "last.pt"), context, as_fields(request.options))


def _restarted(out: Path, context: distributed.Context) -> Trainer | None:
    """The run in out/last.pt, when this process is a worker that torchrun started again, in the same
    job, after a failure or a change of membership: the checkpoint holds the job's run id (see
    distributed.Context). Otherwise None, and the run starts as asked, refusing to overwrite another."""
    if context.run_id is None or not (out / "last.pt").is_file():
        return None
    checkpoint = load_checkpoint(out / "last.pt")
    return _continued(checkpoint, context) if checkpoint.get("run_id") == context.run_id else None


def _continued(checkpoint: dict, context: distributed.Context, overrides: dict | None = None) -> Trainer:
    """The saved run, on as many ranks as `context` has, on its own data; `overrides` (config fields)
    changes the options that may change, and Trainer.from_checkpoint refuses the rest."""
    overrides = overrides or {}
    saved = checkpoint["train_config"]
    columns = label_columns(checkpoint)
    splits = Splits.read(saved["data"], Vocab(tuple(checkpoint["vocab"])), columns, use_labels=columns is not None)
    device = _rank_device(resolve_device(overrides.get("device", saved["device"])), context)
    return Trainer.from_checkpoint(checkpoint, splits, device, overrides, context)


def _rank_device(device: torch.device, context: distributed.Context) -> torch.device:
    return torch.device("cuda", context.local_rank) if device.type == "cuda" and context.active else device


def sized_for(model_config: ModelConfig, splits: Splits) -> ModelConfig:
    """The model config with the data's vocabulary and label columns (it refuses labels it cannot take),
    and for a positional kind the data's positions."""
    positions = {"positions": splits.positions} if KINDS[model_config.kind].positional else {}
    return replace(model_config, vocab_size=len(splits.vocab), label_sizes=splits.label_sizes, **positions)


def _refuse_over_earlier(request: Request) -> None:
    """A new run does not replace what out holds (a run, finished or not, or an ensemble's) unless told to."""
    out = request.out
    if not request.overwrite and any((out / f).exists() for f in ("model.pt", "last.pt", ENSEMBLE_FILE)):
        raise ValueError(
            f"{out} already holds a checkpoint: continue it with --resume, or pass --overwrite, or choose another --out"
        )


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
        metrics = run(sized_for(model_config, splits), config, splits, out, runner, fresh=fresh)
    except TrainingInterrupted as e:  # the ensemble, not the member, is what --resume continues
        raise TrainingInterrupted(e.step, e.path, out) from None
    if "diverged" in metrics:
        raise ValueError(metrics["diverged"])
    model, vocab, _ = load_model(out / "model.pt")
    return Trained(metrics, model, vocab, splits.seen)


def run(
    model_config: ModelConfig, config: TrainConfig, splits: Splits, out: Path, runner: Runner, fresh: bool = False
) -> dict:
    """Train one configuration into `out`, or continue or read back what is there (unless `fresh`:
    start afresh over it). An ensemble (config.members > 1) is a run of runs: see run_ensemble.
    Returns metrics."""
    if config.members > 1:
        return run_ensemble(model_config, config, splits, out, runner, fresh)
    finished = None if fresh else _read_back(out, model_config, config)
    if finished is not None:
        return finished
    device = resolve_device(config.device)
    if not fresh and (out / "last.pt").exists():
        checkpoint = load_checkpoint(out / "last.pt", map_location=device)
        _check_same(checkpoint["model_config"], checkpoint["train_config"], model_config, config, out)
        trainer = Trainer.from_checkpoint(checkpoint, splits, device)
    else:
        trainer = Trainer(model_config, config, splits, device)
    try:
        runner(trainer, out)
    except TrainingDiverged as e:  # a point of a sweep with too high a learning rate: a row of nan, not the end
        metrics = {
            "train_loss": math.nan,
            "val_loss": math.nan,
            "steps": e.step,
            "seconds": round(trainer.seconds, 2),
            "params": count_params(trainer.model),
            "model": asdict(model_config),
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


def _check_same(saved_model: dict, saved_train: dict, model_config, config, out: Path) -> None:
    if not _same(saved_model, saved_train, model_config, config):
        raise ValueError(f"{out} holds a run with other settings; choose another --out to keep both")


def _same(saved_model: dict, saved_train: dict, model_config, config) -> bool:
    """How many members trained at once changes nothing they learnt."""
    given = {**asdict(model_config), **asdict(config)}
    return not changed_settings(saved_model, saved_train, given, may_change={"members_at_once"})


ENSEMBLE_FILE = "ensemble.json"  # an ensemble's settings, written before its first member trains


def member_seed(seed: int, member: int) -> int:
    """The seed of an ensemble's member 0, 1, 2, ...: seed, seed+1000, ... Member 0 is the run that the
    same options train alone, and ensembles of seeds 42 and 43 share no member."""
    return seed + 1000 * member


def run_ensemble(
    model_config: ModelConfig, config: TrainConfig, splits: Splits, out: Path, runner: Runner, fresh: bool = False
) -> dict:
    """Train config.members models alike but for their seeds (member_seed), config.members_at_once at
    a time, each a run of its own in out/member-1, out/member-2, ... (resumable as any run), then save
    them as one Ensemble in out/model.pt, with its figures in out/metrics.json. A member's directory
    that holds a run of other settings is what an earlier ensemble, replaced with `fresh`, left: it
    trains afresh. Returns metrics: the ensemble's losses, and each member's."""
    finished = None if fresh else _read_back(out, model_config, config)
    if finished is not None:
        return finished
    out.mkdir(parents=True, exist_ok=True)
    write_json({"model": asdict(model_config), "train_config": asdict(config)}, out / ENSEMBLE_FILE)
    if fresh:  # the figures of the ensemble this one replaces (its model.pt stays until this one's is saved)
        (out / "metrics.json").unlink(missing_ok=True)
    jobs = []  # run()'s arguments, one member each
    for i in range(config.members):
        member_config = replace(
            config, members=1, members_at_once=1, seed=member_seed(config.seed, i), report_test=False
        )
        member_out = out / f"member-{i + 1}"
        stale = fresh or not _holds_run_of(member_out, model_config, member_config)
        jobs.append((model_config, member_config, splits, member_out, runner, stale))
    if config.members_at_once > 1:
        members = run_at_once(run, jobs, config.members_at_once)
    else:  # one after another: a diverging member stops the rest
        members = []
        for job in jobs:
            members.append(run(*job))
            if "diverged" in members[-1]:
                break
    for i, member in enumerate(members):
        if "diverged" in member:
            return {**member, "diverged": f"member {i + 1}: {member['diverged']}"}
    return finish_ensemble(model_config, config, splits, out, members)


def _holds_run_of(out: Path, model_config: ModelConfig, config: TrainConfig) -> bool:
    """Whether `out` holds nothing yet, or a run (finished or not) of these settings."""
    if (out / "metrics.json").exists():
        saved = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        return _same(saved["model"], saved["train_config"], model_config, config)
    if (out / "last.pt").exists():
        saved = load_checkpoint(out / "last.pt")
        return _same(saved["model_config"], saved["train_config"], model_config, config)
    return True


def finish_ensemble(
    model_config: ModelConfig, config: TrainConfig, splits: Splits, out: Path, members: list[dict]
) -> dict:
    """Save the members' best models (out/member-N/model.pt) as one ensemble, out/model.pt, and its
    figures, out/metrics.json: its losses over the training and validation splits (and the test split
    once, with report_test), the members' own, and the training time of them all; and
    out/metrics.jsonl: the val loss of the first 1, 2, ... members as one ensemble, with the time
    they took, trained members_at_once at a time."""
    device = resolve_device(config.device)
    paths = [out / f"member-{i + 1}" / "model.pt" for i in range(len(members))]
    save_checkpoint(ensemble_checkpoint([load_checkpoint(p, device) for p in paths], asdict(config)), out / "model.pt")
    model, _, _ = load_model(out / "model.pt", device)
    # what each model added: the val loss of members 1..k as one ensemble, against the time they took
    finished = _finish_times([m["seconds"] for m in members], config.members_at_once)
    val = splits.batches("val", model, device)
    growth = [
        {"members": k, "seconds": round(max(finished[:k]), 2), "val_loss": evaluate(Ensemble(model.members[:k]), val)}
        for k in range(1, len(members) + 1)
    ]
    write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in growth))
    keep = ("seed", "val_loss", "train_loss", "best_step", "seconds")
    metrics = {
        "train_loss": evaluate(model, splits.batches("train", model, device)),
        "val_loss": growth[-1]["val_loss"],
        "steps": config.steps,  # each member's
        "seconds": growth[-1]["seconds"],  # training, members_at_once at a time: what a clock on the wall shows
        "params": count_params(model),
        "members": [{k: m["train_config"]["seed"] if k == "seed" else m[k] for k in keep} for m in members],
        "model": asdict(model_config),
        "train_config": asdict(config),
    }
    if config.report_test:  # once, of the ensemble; its members' test losses are never computed
        metrics["test_loss"] = evaluate(model, splits.batches("test", model, device))
    write_json(metrics, out / "metrics.json")
    return metrics


def _finish_times(seconds: list[float], at_once: int) -> list[float]:
    """When each of the models, trained in order `at_once` at a time (each as soon as one before it is
    done), finishes, from each one's own training seconds: the first k take the latest of theirs."""
    free = [0.0] * at_once  # when each place is free again
    finished = []
    for own in seconds:
        place = free.index(min(free))
        free[place] += own
        finished.append(free[place])
    return finished
