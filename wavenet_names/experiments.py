"""Experiments: the lecture's performance log as named presets, sweeps over options, and the shipped
models trained again (the race of every kind against the clock is race.py's).

Every run trains into a directory of its own and is resumable (see runs.run): an interrupted table
or sweep is finished by running the same command again.
"""

import itertools
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from . import shipped
from .checkpoint import load_checkpoint, save_checkpoint
from .configuration import option_names, settings
from .distill import STUDENT
from .files import write_json, write_text
from .fitting import Runner
from .presets import LECTURE_PRESETS, Preset
from .runs import run
from .splits import Splits


def lecture_table(splits: Splits, data: str, out: Path, runner: Runner, scale: int = 1, seed: int = 42) -> list[dict]:
    """Run every preset of the lecture's log, with its step counts divided by `scale`; write
    results.json and results.md into `out`."""
    rows = []
    for preset in LECTURE_PRESETS:
        model_config, config = settings({**preset.options, "data": data, "seed": seed}, splits.facts)
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
    return {
        "preset": preset.name,
        "description": preset.description,
        **{k: metrics[k] for k in keep},
        "lecture_train_loss": lecture_train,
        "lecture_val_loss": lecture_val,
    }


def _write_table(rows: list[dict], out: Path, scale: int) -> None:
    write_json(rows, out / "results.json")
    scaled = f" (step counts / {scale})" if scale > 1 else ""
    lines = [
        f"Lecture presets{scaled}, on the lecture's split.",
        "",
        "| preset | what | params | train | val | lecture train | lecture val | steps | seconds |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lecture = [f"{r[k]:.3f}" if r[k] is not None else "-" for k in ("lecture_train_loss", "lecture_val_loss")]
        losses = f"{r['train_loss']:.4f} | {r['val_loss']:.4f} | {lecture[0]} | {lecture[1]}"
        lines.append(
            f"| {r['preset']} | {r['description']} | {r['params']:,} | {losses} | {r['steps']:,} | {r['seconds']:.0f} |"
        )
    write_text(out / "results.md", "\n".join(lines) + "\n")


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
        config = cls(
            raw.get("base", {}),
            raw.get("grid", {}),
            raw.get("seeds", [42]),
            raw.get("search", "grid"),
            raw.get("samples"),
            raw.get("runs"),
        )
        config.validate(path)
        return config

    def validate(self, path) -> None:
        if self.runs is not None:
            self._validate_runs(path)
        names = option_names() - {"seed"}
        for key in [*self.base, *self.grid, *(k for r in self.runs or [] for k in r if k != "name")]:
            if key not in names:
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


def sweep(
    sweep_config: SweepConfig,
    splits: Splits,
    data: str,
    out: Path,
    runner: Runner,
    on_result: Callable[[str, dict], None] | None = None,
) -> list[dict]:
    """Run every point of the sweep (skipping those done); results.jsonl gets one row per run."""
    rows = []
    for point in sweep_config.points():
        name = run_name(point)
        options = {k: v for k, v in {**sweep_config.base, **point}.items() if k != "name"}  # a run's name is no option
        model_config, config = settings({"data": data, **options}, splits.facts)
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
    lines = [
        "| setting | params | seeds | val mean | val spread | val per seed | train mean | seconds |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for setting, group in by_setting.items():
        vals = [r["val_loss"] for r in group]
        mean = sum(vals) / len(vals)
        train = sum(r["train_loss"] for r in group) / len(group)
        seconds = sum(r["seconds"] for r in group) / len(group)
        per_seed = ", ".join(f"{v:.4f}" for v in vals)
        lines.append(
            f"| {setting} | {group[0]['params']:,} | {len(group)} | {mean:.4f} | {max(vals) - min(vals):.4f} "
            f"| {per_seed} | {train:.4f} | {seconds:.0f} |"
        )
    return "\n".join(lines) + "\n"


# --- the shipped models ---------------------------------------------------------------------------


def ship(runner: Runner, runs: Path, directory: Path | None = None) -> dict:
    """Train every shipped model: on its data, a teacher (`--preset max`'s ensemble) in runs/<name>-teacher,
    then the student it distils into, of the default size, with distill.STUDENT's recipe, in
    runs/<name>; each run resumable. Writes each student's slim checkpoint and trained.json into
    `directory`; returns what trained.json holds."""
    directory = directory or shipped.DIRECTORY
    written = {}
    for model in shipped.SHIPPED.values():
        splits = Splits.read(model.data)
        data = {"data": str(model.data)}
        teacher_runs = runs / f"{model.name}-teacher"
        teacher = run(*settings(data, splits.facts, preset="max"), splits, teacher_runs, runner)
        student = {**data, **STUDENT, "teacher": str(teacher_runs)}
        metrics = run(*settings(student, splits.facts), splits, runs / model.name, runner)
        checkpoint = load_checkpoint(runs / model.name / "model.pt")
        save_checkpoint(shipped.slim(checkpoint, model.data), shipped.path_of(model.name, directory))
        written[model.name] = {
            "description": model.description,
            "data": model.data.name,
            "params": metrics["params"],
            "steps": metrics["steps"],
            "train_loss": metrics["train_loss"],
            "val_loss": metrics["val_loss"],
            "distilled": {**STUDENT, "teacher": "--preset max", "teacher_val_loss": teacher["val_loss"]},
        }
        write_json(written, directory / shipped.RECORD)
    return written
