"""Ensembles: several models trained alike from their own seeds, one run each, one after another or
several at once (each in a process of its own: processes.run_at_once), then saved as one model whose
next-character distributions are their average (ensemble.Ensemble). `train --members N` trains one.

An ensemble is resumable as any run: its settings are written before its first member trains
(ensemble.json), each member's run resumes on its own, and a finished member is read back.
"""

import json
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

from .checkpoint import ensemble_checkpoint, load_checkpoint, load_model, save_checkpoint
from .configuration import TrainConfig, same_settings, saved_configs
from .devices import resolve_device
from .ensemble import Ensemble
from .files import write_json, write_text
from .fitting import Runner
from .models import ModelConfig, batches_for, count_params
from .processes import run_at_once
from .scoring import evaluate
from .splits import Splits

ENSEMBLE_FILE = "ensemble.json"  # an ensemble's settings, written before its first member trains


def member_seed(seed: int, member: int) -> int:
    """The seed of an ensemble's member 0, 1, 2, ...: seed, seed+1000, ... Member 0 is the run that the
    same options train alone, and ensembles of seeds 42 and 43 share no member."""
    return seed + 1000 * member


def run_ensemble(
    model_config: ModelConfig,
    config: TrainConfig,
    splits: Splits,
    out: Path,
    runner: Runner,
    run_member: Callable[..., dict],
    fresh: bool = False,
) -> dict:
    """Train config.members models alike but for their seeds (member_seed), config.members_at_once at
    a time, each a run of its own in out/member-1, out/member-2, ... (run_member(model_config,
    member_config, splits, member_out, runner, fresh): runs.run, a function a process can take), then
    save them as one Ensemble in out/model.pt, with its figures in out/metrics.json. A member's
    directory that holds a run of other settings is what an earlier ensemble, replaced with `fresh`,
    left: it trains afresh. Returns metrics: the ensemble's losses, and each member's. (runs.run reads
    a finished ensemble back before it calls this.)"""
    out.mkdir(parents=True, exist_ok=True)
    write_json({"model": model_config.saved(), "train_config": asdict(config)}, out / ENSEMBLE_FILE)
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
        members = run_at_once(run_member, jobs, config.members_at_once)
    else:  # one after another: a diverging member stops the rest
        members = []
        for job in jobs:
            members.append(run_member(*job))
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
        return same_settings(saved_configs(saved["model"], saved["train_config"]), model_config, config)
    if (out / "last.pt").exists():
        saved = load_checkpoint(out / "last.pt")
        return same_settings(saved_configs(saved["model_config"], saved["train_config"]), model_config, config)
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
    finished = finish_times([m["seconds"] for m in members], config.members_at_once)
    val = batches_for(model, splits, "val", device)
    growth = [
        {"members": k, "seconds": round(max(finished[:k]), 2), "val_loss": evaluate(Ensemble(model.members[:k]), val)}
        for k in range(1, len(members) + 1)
    ]
    write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in growth))
    keep = ("seed", "val_loss", "train_loss", "best_step", "seconds")
    metrics = {
        "train_loss": evaluate(model, batches_for(model, splits, "train", device)),
        "val_loss": growth[-1]["val_loss"],
        "steps": config.steps,  # each member's
        "seconds": growth[-1]["seconds"],  # training, members_at_once at a time: what a clock on the wall shows
        "params": count_params(model),
        "members": [{k: m["train_config"]["seed"] if k == "seed" else m[k] for k in keep} for m in members],
        "model": model_config.saved(),
        "train_config": asdict(config),
    }
    if config.report_test:  # once, of the ensemble; its members' test losses are never computed
        metrics["test_loss"] = evaluate(model, batches_for(model, splits, "test", device))
    write_json(metrics, out / "metrics.json")
    return metrics


def finish_times(seconds: list[float], at_once: int) -> list[float]:
    """When each of the models, trained in order `at_once` at a time (each as soon as one before it is
    done), finishes, from each one's own training seconds: the first k take the latest of theirs."""
    free = [0.0] * at_once  # when each place is free again
    finished = []
    for own in seconds:
        place = free.index(min(free))
        free[place] += own
        finished.append(free[place])
    return finished
