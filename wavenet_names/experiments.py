"""Experiments: the lecture's performance log as named presets, and sweeps over options.

Every run trains into a directory of its own and is resumable: a run whose metrics.json exists is
done and read back, a run with only last.pt continues from it, so an interrupted table or sweep is
finished by running the same command again.
"""

import itertools
import json
import math
import multiprocessing
import os
import pickle
import queue
import random
import signal
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from .checkpoint import ensemble_checkpoint, load_checkpoint, load_model, save_checkpoint
from .ensemble import Ensemble
from .models import ModelConfig, count_params
from .training import (
    OPTIONS,
    Splits,
    TrainConfig,
    Trainer,
    TrainingDiverged,
    TrainingInterrupted,
    configs,
    evaluate,
    finish,
    resolve_device,
    write_json,
    write_text,
)

# what runs a Trainer to its end, writing into a directory: the CLI's fit with a progress bar
Runner = Callable[[Trainer, Path], None]


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    options: dict  # by name, as `train`'s flags: {"model": "flat", "n_embd": 10, ...}; the kind's recipe under them
    lecture: tuple[float, float] | None = None  # (train, val) in the lecture's log


LECTURE_PRESETS = [
    Preset("flat-3", "flat MLP, 3-character context, 200 hidden",
           dict(model="flat", n_embd=10, n_hidden=200, block_size=3), (2.058, 2.105)),
    Preset("flat-8", "flat MLP, 8-character context",
           dict(model="flat", n_embd=10, n_hidden=200, block_size=8), (1.918, 2.027)),
    Preset("tree-22k-bug", "hierarchical, batch-norm over the batch dimension only (the lecture's bug)",
           dict(model="hierarchical", n_embd=10, n_hidden=68, n_layers=3, batchnorm_bug=True), (1.941, 2.029)),
    Preset("tree-22k", "hierarchical, batch-norm over batch and position (the fix)",
           dict(model="hierarchical", n_embd=10, n_hidden=68, n_layers=3), (1.912, 2.022)),
    Preset("tree-76k", "hierarchical, n_embd 24, n_hidden 128",
           dict(model="hierarchical", n_embd=24, n_hidden=128, n_layers=3), (1.769, 1.993)),
    Preset("conv-76k", "the same 76K tree as ConvWaveNet on whole names (the default `train`)",
           dict(model="conv", n_embd=24, n_hidden=128, n_layers=3)),
]  # fmt: skip
QUICK_FACTOR = 20  # --quick divides every step count by this

# `wavenet-names train --preset NAME`: configurations chosen on the validation split
TRAIN_PRESETS = {
    "best": Preset(
        "best",
        "ConvWaveNet with a 16-character context (4 levels), n_embd 32, n_hidden 384, dropout 0.2; "
        "4,000 AdamW steps of 256 names (about 7 minutes on 2 CPU cores); reports the test loss",
        dict(
            model="conv",
            n_embd=32,
            n_hidden=384,
            n_layers=4,
            dropout=0.2,
            steps=4000,
            batch_size=256,
            eval_every=500,
            report_test=True,
        ),
    ),
    "max": Preset(
        "max",
        "6 ConvWaveNets like best's but narrower and with less dropout (n_hidden 256, dropout 0.1), each "
        "4,000 AdamW steps of 256 names from its own seed, 2 at a time, averaged as one ensemble (about 20 "
        "minutes on 2 CPU cores); reports the test loss",
        dict(
            model="conv",
            n_embd=32,
            n_hidden=256,
            n_layers=4,
            dropout=0.1,
            steps=4000,
            batch_size=256,
            eval_every=500,
            report_test=True,
            members=6,
            members_at_once=2,
        ),
    ),
}
PRESET_HELP = "; ".join(f"{name}: {preset.description}" for name, preset in TRAIN_PRESETS.items())


def run(model_config: ModelConfig, config: TrainConfig, splits: Splits, out: Path, runner: Runner,
        fresh: bool = False) -> dict:  # fmt: skip
    """Train one configuration into `out`, or continue or read back what is there (unless `fresh`:
    start afresh over it). An ensemble (config.members > 1) is a run of runs: see run_ensemble.
    Returns metrics."""
    if config.members > 1:
        return run_ensemble(model_config, config, splits, out, runner, fresh)
    if not fresh and (out / "metrics.json").exists():
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        _check_same(metrics["model"], metrics["train_config"], model_config, config, out)
        return metrics
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
        metrics = {"train_loss": math.nan, "val_loss": math.nan, "steps": e.step, "seconds": round(trainer.seconds, 2),
                   "params": count_params(trainer.model), "model": asdict(model_config),
                   "train_config": asdict(config), "diverged": str(e)}  # fmt: skip
        write_json(metrics, out / "metrics.json")  # done: a resumed sweep reads it back, as any finished run
        return metrics
    return finish(trainer, out)[0]


def _check_same(saved_model: dict, saved_train: dict, model_config, config, out: Path) -> None:
    if not _same(saved_model, saved_train, model_config, config):
        raise ValueError(f"{out} holds a run with other settings; choose another --out to keep both")


def _same(saved_model: dict, saved_train: dict, model_config, config) -> bool:
    """Compared as configs, so that a field added since the run was saved takes its default. How many
    members trained at once changes nothing they learnt."""
    saved = replace(TrainConfig(**saved_train), members_at_once=config.members_at_once)
    return ModelConfig(**saved_model) == model_config and saved == config


def lecture_table(splits: Splits, data: str, out: Path, runner: Runner, scale: int = 1, seed: int = 42) -> list[dict]:
    """Run every preset of the lecture's log, with its step counts divided by `scale`; write
    results.json and results.md into `out`."""
    rows = []
    for preset in LECTURE_PRESETS:
        model_config, config = configs({**preset.options, "data": data, "seed": seed}, len(splits.vocab))
        if scale > 1:
            steps = max(1, config.steps // scale)
            eval_every = max(config.eval_every // scale, steps // 5, 1)  # at most 5 evaluations
            config = replace(config, steps=steps, eval_every=eval_every, warmup=min(config.warmup, steps // 10))
        metrics = run(model_config, config, splits, out / preset.name, runner)
        rows.append(_row(preset, metrics))
        _write_table(rows, out, scale)
    return rows


def _row(preset: Preset, metrics: dict) -> dict:
    lecture_train, lecture_val = preset.lecture or (None, None)
    keep = ("params", "train_loss", "val_loss", "steps", "seconds")
    return {"preset": preset.name, "description": preset.description, **{k: metrics[k] for k in keep},
            "lecture_train_loss": lecture_train, "lecture_val_loss": lecture_val}  # fmt: skip


def _write_table(rows: list[dict], out: Path, scale: int) -> None:
    write_json(rows, out / "results.json")
    scaled = f" (step counts / {scale})" if scale > 1 else ""
    lines = [f"Lecture presets{scaled}, on the lecture's split.", "",
             "| preset | what | params | train | val | lecture train | lecture val | steps | seconds |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for r in rows:
        lecture = [f"{r[k]:.3f}" if r[k] is not None else "-" for k in ("lecture_train_loss", "lecture_val_loss")]
        losses = f"{r['train_loss']:.4f} | {r['val_loss']:.4f} | {lecture[0]} | {lecture[1]}"
        lines.append(f"| {r['preset']} | {r['description']} | {r['params']:,} | {losses} | {r['steps']:,} | "
                     f"{r['seconds']:.0f} |")  # fmt: skip
    write_text(out / "results.md", "\n".join(lines) + "\n")


# --- ensembles --------------------------------------------------------------------------------------

ENSEMBLE_FILE = "ensemble.json"  # an ensemble's settings, written before its first member trains


def member_seed(seed: int, member: int) -> int:
    """The seed of an ensemble's member 0, 1, 2, ...: seed, seed+1000, ... Member 0 is the run that the
    same options train alone, and ensembles of seeds 42 and 43 share no member."""
    return seed + 1000 * member


def run_ensemble(model_config: ModelConfig, config: TrainConfig, splits: Splits, out: Path, runner: Runner,
                 fresh: bool = False) -> dict:  # fmt: skip
    """Train config.members models alike but for their seeds (member_seed), one after another, each a
    run of its own in out/member-1, out/member-2, ... (resumable as any run), then save them as one
    Ensemble in out/model.pt, with its figures in out/metrics.json. A member's directory that holds a
    run of other settings is what an earlier ensemble, replaced with `fresh`, left: it trains afresh.
    Returns metrics: the ensemble's losses, and each member's."""
    if not fresh and (out / "metrics.json").exists():
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        _check_same(metrics["model"], metrics["train_config"], model_config, config, out)
        return metrics
    out.mkdir(parents=True, exist_ok=True)
    write_json({"model": asdict(model_config), "train_config": asdict(config)}, out / ENSEMBLE_FILE)
    if fresh:  # the figures of the ensemble this one replaces (its model.pt stays until this one's is saved)
        (out / "metrics.json").unlink(missing_ok=True)
    jobs = []  # run()'s arguments, one member each
    for i in range(config.members):
        member_config = replace(config, members=1, members_at_once=1, seed=member_seed(config.seed, i),
                                report_test=False)  # fmt: skip
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
                    return index, ChildProcessError(f"the process training member {index + 1} died "
                                                    f"(exit code {process.exitcode})")  # fmt: skip


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


def finish_ensemble(model_config: ModelConfig, config: TrainConfig, splits: Splits, out: Path,
                    members: list[dict]) -> dict:  # fmt: skip
    """Save the members' best models (out/member-N/model.pt) as one ensemble, out/model.pt, and its
    figures, out/metrics.json: its losses over the training and validation splits (and the test split
    once, with report_test), the members' own, and the training time of them all; and
    out/metrics.jsonl: the val loss of the first 1, 2, ... members as one ensemble, with their time."""
    device = resolve_device(config.device)
    paths = [out / f"member-{i + 1}" / "model.pt" for i in range(len(members))]
    save_checkpoint(ensemble_checkpoint([load_checkpoint(p, device) for p in paths], asdict(config)), out / "model.pt")
    model, _, _ = load_model(out / "model.pt", device)
    # what each model added: the val loss of members 1..k as one ensemble, against their training time
    val = splits.batches("val", model, device)
    growth = [{"members": k, "seconds": round(sum(m["seconds"] for m in members[:k]), 2),
               "val_loss": evaluate(Ensemble(model.members[:k]), val)} for k in range(1, len(members) + 1)]  # fmt: skip
    write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in growth))
    keep = ("seed", "val_loss", "train_loss", "best_step", "seconds")
    metrics = {
        "train_loss": evaluate(model, splits.batches("train", model, device)),
        "val_loss": growth[-1]["val_loss"],
        "steps": config.steps,  # each member's
        "seconds": round(sum(m["seconds"] for m in members), 2),  # training, all members together
        "params": count_params(model),
        "members": [{k: m["train_config"]["seed"] if k == "seed" else m[k] for k in keep} for m in members],
        "model": asdict(model_config),
        "train_config": asdict(config),
    }
    if config.report_test:  # once, of the ensemble; its members' test losses are never computed
        metrics["test_loss"] = evaluate(model, splits.batches("test", model, device))
    write_json(metrics, out / "metrics.json")
    return metrics


# --- sweeps -----------------------------------------------------------------------------------------

RESULT_KEYS = ("params", "train_loss", "val_loss", "seconds")  # what a sweep keeps of each run's metrics


@dataclass
class SweepConfig:
    """A sweep file (JSON):

        {"base": {"steps": 2000},                      # options every run shares
         "grid": {"lr": [0.001, 0.003], "n_hidden": [128, 256]},
         "seeds": [42, 43],                            # every point once per seed (default [42])
         "search": "grid",                             # or "random": `samples` random points
         "samples": 8}

    Keys are the options of `wavenet-names train` with underscores ("model", "n_hidden", "lr", ...).
    An ablation is a list of named settings instead of (or crossed with) a grid:

        {"base": {"steps": 4000},
         "runs": [{"name": "small", "n_hidden": 128}, {"name": "wide", "n_hidden": 384}],
         "seeds": [42, 43, 44]}

    Besides results.jsonl (one row per run), the sweep writes summary.md: one row per setting, its
    val loss averaged over the seeds, with the spread that tells a real difference from noise.
    """

    base: dict
    grid: dict
    seeds: list
    search: str = "grid"
    samples: int | None = None
    runs: list | None = None  # named settings, each {"name": ..., option: value, ...}

    @classmethod
    def load(cls, path: str | Path) -> "SweepConfig":
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"{path}: no such sweep file") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not a JSON sweep file ({e})") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("grid", {}), dict):
            raise ValueError(f'{path}: expected an object with "grid": {{"option": [values, ...]}}')
        unknown = set(raw) - {"base", "grid", "seeds", "search", "samples", "runs"}
        if unknown:
            raise ValueError(f"{path}: unknown key {sorted(unknown)[0]!r}")
        config = cls(raw.get("base", {}), raw.get("grid", {}), raw.get("seeds", [42]), raw.get("search", "grid"),
                     raw.get("samples"), raw.get("runs"))  # fmt: skip
        config.validate(path)
        return config

    def validate(self, path) -> None:
        if self.runs is not None:
            self._validate_runs(path)
        for key in [*self.base, *self.grid, *(k for r in self.runs or [] for k in r if k != "name")]:
            if key not in OPTIONS or key == "seed":
                raise ValueError(f'{path}: {key!r} is not an option of train (seeds go in "seeds")')
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"{path}: grid {key!r} must be a non-empty list of values")
        if self.search not in ("grid", "random"):
            raise ValueError(f'{path}: "search" must be "grid" or "random"')
        if self.search == "random" and not (isinstance(self.samples, int) and self.samples >= 1):
            raise ValueError(f'{path}: a random search needs "samples": a whole number >= 1')
        if not self.seeds or not all(isinstance(s, int) for s in self.seeds):
            raise ValueError(f'{path}: "seeds" must be a non-empty list of whole numbers')

    def _validate_runs(self, path) -> None:
        if not isinstance(self.runs, list) or not self.runs or not all(isinstance(r, dict) for r in self.runs):
            raise ValueError(f'{path}: "runs" must be a non-empty list of {{"name": ..., option: value}} objects')
        names = [r.get("name") for r in self.runs]
        if not all(isinstance(n, str) and n and "/" not in n for n in names) or len(set(names)) != len(names):
            raise ValueError(f'{path}: every entry of "runs" needs a "name" of its own (no "/")')
        for r in self.runs:
            both = sorted(set(r) & set(self.grid))
            if both:
                raise ValueError(f'{path}: {both[0]!r} is set by both run {r["name"]!r} and "grid"')

    def points(self) -> list[dict]:
        """Every option setting to run, seeds included, in a fixed order."""
        keys = sorted(self.grid)
        grid = [dict(zip(keys, values, strict=True)) for values in itertools.product(*(self.grid[k] for k in keys))]
        if self.search == "random":
            rng = random.Random(0)
            grid = [{k: rng.choice(self.grid[k]) for k in keys} for _ in range(self.samples)]
        return [{**run, **point, "seed": seed} for run in self.runs or [{}] for point in grid for seed in self.seeds]


def run_name(point: dict) -> str:
    """A named run reads "wide,seed=42"; a grid point "lr=0.001,n_hidden=8,seed=42"."""
    return ",".join(str(v) if k == "name" else f"{k}={v}" for k, v in point.items()).replace("/", "_")


def sweep(sweep_config: SweepConfig, splits: Splits, data: str, out: Path, runner: Runner,
          on_result: Callable[[str, dict], None] | None = None) -> list[dict]:  # fmt: skip
    """Run every point of the sweep (skipping those done); results.jsonl gets one row per run."""
    rows = []
    for point in sweep_config.points():
        name = run_name(point)
        options = {k: v for k, v in {**sweep_config.base, **point}.items() if k != "name"}  # a run's name is no option
        model_config, config = configs({"data": data, **options}, len(splits.vocab))
        metrics = run(model_config, config, splits, out / "runs" / name, runner)
        rows.append({"run": name, **point, **{k: metrics[k] for k in RESULT_KEYS}})
        write_text(out / "results.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        write_text(out / "summary.md", summary_table(rows))
        if on_result is not None:
            on_result(name, rows[-1])
    return rows


def summary_table(rows: list[dict]) -> str:
    """One markdown row per setting (a sweep point without its seed), its losses averaged over seeds."""
    by_setting: dict[str, list[dict]] = {}
    for row in rows:
        setting = {k: v for k, v in row.items() if k not in ("run", "seed", *RESULT_KEYS)}
        by_setting.setdefault(run_name(setting), []).append(row)
    lines = ["| setting | params | seeds | val mean | val spread | val per seed | train mean | seconds |",
             "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |"]  # fmt: skip
    for setting, group in by_setting.items():
        vals = [r["val_loss"] for r in group]
        mean = sum(vals) / len(vals)
        train = sum(r["train_loss"] for r in group) / len(group)
        seconds = sum(r["seconds"] for r in group) / len(group)
        per_seed = ", ".join(f"{v:.4f}" for v in vals)
        lines.append(f"| {setting} | {group[0]['params']:,} | {len(group)} | {mean:.4f} | {max(vals) - min(vals):.4f} "
                     f"| {per_seed} | {train:.4f} | {seconds:.0f} |")  # fmt: skip
    return "\n".join(lines) + "\n"
