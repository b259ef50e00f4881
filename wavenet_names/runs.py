"""Runs in directories: one configuration trained into a directory of its own, or continued from its
last.pt, or read back from its metrics.json; and an ensemble as a run of runs, one per model, one
after another or several at once, each in a process of its own.

Every run is resumable: running the same thing again finishes what an interruption left.
"""

import json
import math
import multiprocessing
import os
import pickle
import queue
import signal
import threading
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import torch

from .checkpoint import ensemble_checkpoint, load_checkpoint, load_model, save_checkpoint
from .ensemble import Ensemble
from .files import write_json, write_text
from .models import ModelConfig, count_params
from .training import (
    Splits,
    TrainConfig,
    Trainer,
    TrainingDiverged,
    TrainingInterrupted,
    evaluate,
    finish,
    resolve_device,
)

# what runs a Trainer to its end, writing into a directory: the CLI's fit with a progress bar
Runner = Callable[[Trainer, Path], None]


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
    """Compared as configs, so that a field added since the run was saved takes its default. How many
    members trained at once changes nothing they learnt."""
    saved = replace(TrainConfig(**saved_train), members_at_once=config.members_at_once)
    return ModelConfig(**saved_model) == model_config and saved == config


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
        members = run_at_once(jobs, config.members_at_once)
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


def run_at_once(jobs: list[tuple], processes: int) -> list[dict]:
    """run(*job) for every job, `processes` of them at a time, each in a process of its own (spawned:
    a fresh interpreter, with none of this one's thread pools) with its share of this process's CPU
    threads; their results in order. A job's exception is raised here. Ctrl-C here is passed on to the
    running jobs, which save and stop (as run's runner does); none starts, and their
    TrainingInterrupted is raised here."""
    spawn = multiprocessing.get_context("spawn")
    threads = max(1, torch.get_num_threads() // processes)
    results = spawn.Queue()  # (job index, run's metrics or the exception it raised)
    running, done, waiting = {}, {}, list(enumerate(jobs))
    try:
        while waiting or running:
            while waiting and len(running) < processes:
                index, job = waiting.pop(0)
                running[index] = spawn.Process(target=_run_job, args=(index, job, threads, results))
                running[index].start()
            index, result = _next_result(results, running)
            running.pop(index).join()
            done[index] = result
            if isinstance(result, BaseException):
                break  # no new job; the running ones end as their own runs do
    except KeyboardInterrupt:  # Ctrl-C: each running job saves and stops (see _run_job)
        for process in running.values():
            if process.is_alive():
                os.kill(process.pid, signal.SIGINT)
    waiting.clear()
    while running:  # the running jobs finish or save and stop
        index, result = _next_result(results, running)
        running.pop(index).join()
        done[index] = result
    failures = [r for r in done.values() if isinstance(r, BaseException)]
    interrupted = [r for r in failures if isinstance(r, TrainingInterrupted)]
    if interrupted or failures:
        raise (interrupted or failures)[0]
    return [done[i] for i in range(len(jobs))]


def _stop_when_orphaned() -> None:
    """Should the parent die (SIGKILL), stop this job as Ctrl-C does, saving its run, rather than train
    on unwatched."""
    multiprocessing.parent_process().join()
    os.kill(os.getpid(), signal.SIGINT)


def _next_result(results, running: dict) -> tuple[int, object]:
    """The next (job index, result) from run_at_once's processes; an error as the result of one that
    died without one (killed, or out of memory), so that the others are not waited for in vain."""
    while True:
        try:
            return results.get(timeout=1.0)
        except queue.Empty:
            for index, process in running.items():
                if process.exitcode not in (None, 0):
                    return index, ChildProcessError(
                        f"the process training member {index + 1} died (exit code {process.exitcode})"
                    )


def _run_job(index: int, job: tuple, threads: int, results) -> None:
    """In a process of run_at_once's: run(*job), its result (or exception) into `results`."""
    # Signals come from the parent alone, once: in a process group of its own, a terminal's Ctrl-C
    # (which the parent passes on) does not reach this process a second time, which would stop it unsaved
    if hasattr(os, "setpgid"):  # POSIX
        os.setpgid(0, 0)
    threading.Thread(target=_stop_when_orphaned, daemon=True).start()
    torch.set_num_threads(threads)
    try:
        result = run(*job)
    except BaseException as e:  # Ctrl-C, a bad option, ...: raised again in the parent
        try:
            pickle.dumps(e)
            result = e
        except Exception:  # not every exception survives the trip: its type and message do
            result = RuntimeError(f"{type(e).__name__}: {e}")
    results.put((index, result))


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
