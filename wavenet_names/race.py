"""The race: every kind of model against the clock, on the same data, split and machine.

Each entrant trains one run per budget, scheduled by that budget (`--max-time`: its learning rate's
schedule ends when the budget does), so that a run fitted to 60 s is not a 300 s run read at 60 s.
The convolution's entrant is `--max-time` alone, which chooses its size for the budget (budget.py);
the others keep their tuned recipes, scheduled by time the same way. At the seeded budgets, the
convolution and the best of the others train again from more seeds: one seed is not a result.

Every run is a resumable directory, out/<entrant>/<budget>s-seed<N>: the same race again reads
finished runs back, and a run cut short finishes.
"""

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from . import budget
from .checkpoint import load_checkpoint
from .configuration import saved_configs, settings
from .devices import resolve_device
from .files import write_json, write_text
from .fitting import Runner
from .models import KINDS
from .options import OptionError, listing
from .plots import plot_loss_against_time
from .runs import run
from .splits import Splits

RACE_BUDGETS = (30, 60, 150, 300, 600)  # seconds of training
SEEDED_BUDGETS = (150, 300)  # where the convolution and the best peer train from RACE_SEEDS seeds
RACE_SEEDS = 3
CONV = "conv, --max-time alone"


@dataclass(frozen=True)
class Entrant:
    """One kind with its own recipe in the race: its name in the table, and its options of `train`."""

    name: str
    options: dict


RACE_ENTRANTS = (
    Entrant("tree, the lecture's recipe", {"model": "hierarchical", "eval_every": 2000}),
    Entrant(CONV, {"model": "conv"}),  # its size chosen for each budget
    # makemore's models with the recipes tuned for them here (transformer.RECIPE, gru.RECIPE)
    Entrant("transformer, its tuned recipe", {"model": "transformer", "eval_every": 250}),
    Entrant("gru, its tuned recipe", {"model": "gru", "eval_every": 250}),
)


def entrants(models: tuple[str, ...] | None = None) -> tuple[Entrant, ...]:
    """The race's entrants: RACE_ENTRANTS, and every other registered kind with its own recipe; or
    those of the kinds named in `models`, each of which must be registered."""
    every = list(RACE_ENTRANTS)
    raced = {entrant.options["model"] for entrant in every}
    every += [Entrant(f"{name}, its own recipe", {"model": name}) for name in KINDS if name not in raced]
    if models is None:
        return tuple(every)
    for name in models:
        if name not in KINDS:
            raise OptionError("models", f"names {name!r}, which is no kind of model: {listing(list(KINDS))}")
    return tuple(entrant for entrant in every if entrant.options["model"] in models)


def race(
    splits: Splits,
    data: str,
    out: Path,
    runner: Runner,
    budgets: tuple[float, ...] = RACE_BUDGETS,
    entrants: tuple[Entrant, ...] = RACE_ENTRANTS,
    seed: int = 42,
    seeded: tuple[float, ...] = SEEDED_BUDGETS,
    seeds: int = RACE_SEEDS,
) -> list[dict]:
    """Train every entrant once per budget, one run at a time; then, at each of the `seeded` budgets
    that the race has, the convolution and the best other entrant from `seeds` seeds in all (seed,
    seed + 1, ...). Writes results.json, results.md and race.png (val against the budget, a line per
    entrant) into `out` after every run; returns the rows."""
    runs = {}  # (entrant's name, budget) -> each seed's metrics
    for entrant in entrants:
        for b in budgets:
            runs[entrant.name, b] = [_run(entrant, b, seed, splits, data, out, runner)]
            _write(entrants, budgets, runs, out)
    for b in (b for b in seeded if b in budgets):
        for entrant in _seeded(entrants, b, runs):
            for extra in range(1, seeds):
                runs[entrant.name, b].append(_run(entrant, b, seed + extra, splits, data, out, runner))
                _write(entrants, budgets, runs, out)
    return _rows(entrants, budgets, runs)


def _run(entrant: Entrant, seconds: float, seed: int, splits: Splits, data: str, out: Path, runner: Runner) -> dict:
    """One entrant's run for one budget: its recipe scheduled by `seconds`; the convolution's size
    chosen for them, or read from the run already there (the machine's speed may have changed)."""
    directory = out / _slug(entrant.name) / f"{seconds:g}s-seed{seed}"
    options = {**entrant.options, "data": data, "seed": seed, "max_time": float(seconds)}
    model_config, config = settings(options, splits.facts)
    if not budget.chooses(options, None, model_config, config):
        metrics = run(model_config.sized_for(splits), config, splits, directory, runner)
    elif (saved := _saved(directory)) is not None:
        metrics = run(*saved, splits, directory, runner)
    else:
        model_config, config, choice = budget.choose(options, splits, resolve_device(config.device))
        metrics = run(model_config, config, splits, directory, runner, choice=choice)
    records = [json.loads(line) for line in (directory / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return {**metrics, "positions_per_second": statistics.mean(r["positions_per_second"] for r in records)}


def _saved(directory: Path) -> tuple | None:
    """The configs of the run in `directory`, finished (metrics.json) or not (last.pt), or None."""
    if (directory / "metrics.json").exists():
        metrics = json.loads((directory / "metrics.json").read_text(encoding="utf-8"))
        return saved_configs(metrics["model"], metrics["train_config"])
    if (directory / "last.pt").exists():
        checkpoint = load_checkpoint(directory / "last.pt")
        return saved_configs(checkpoint["model_config"], checkpoint["train_config"])
    return None


def _seeded(entrants: tuple[Entrant, ...], seconds: float, runs: dict) -> list[Entrant]:
    """The entrants that train again at a seeded budget: the convolution, and the best of the others."""
    conv = [e for e in entrants if e.name == CONV]
    others = [e for e in entrants if e.name != CONV]
    best = min(others, key=lambda e: runs[e.name, seconds][0]["val_loss"], default=None)
    return conv + ([best] if best is not None else [])


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")


def _rows(entrants: tuple[Entrant, ...], budgets: tuple[float, ...], runs: dict) -> list[dict]:
    rows = []
    for entrant in entrants:
        done = {b: runs[entrant.name, b] for b in budgets if (entrant.name, b) in runs}
        if not done:
            continue
        rates = [m["positions_per_second"] for ms in done.values() for m in ms]
        rows.append(
            {
                "entrant": entrant.name,
                "options": entrant.options,
                "val": {str(b): [m["val_loss"] for m in ms] for b, ms in done.items()},
                "params": {str(b): ms[0]["params"] for b, ms in done.items()},
                "chosen": {str(b): ms[0].get("chosen") for b, ms in done.items()},
                "steps": {str(b): ms[0]["steps"] for b, ms in done.items()},
                "rates": {str(b): statistics.mean(m["positions_per_second"] for m in ms) for b, ms in done.items()},
                "positions_per_second": statistics.mean(rates),
            }
        )
    return rows


def _write(entrants: tuple[Entrant, ...], budgets: tuple[float, ...], runs: dict, out: Path) -> None:
    rows = _rows(entrants, budgets, runs)
    write_json(rows, out / "results.json")
    write_text(out / "results.md", table(rows, budgets))
    curves = {
        r["entrant"]: [{"seconds": float(b), "val_loss": statistics.mean(v)} for b, v in r["val"].items()] for r in rows
    }
    plot_loss_against_time(curves, out / "race.png")


def table(rows: list[dict], budgets: tuple[float, ...]) -> str:
    """results.md: each entrant's val at each budget (the mean, and its spread over seeds where there
    are several), bold where it is the budget's lowest; conv's lead over the best of the others (a
    tie where the lead is within the spread); the size conv chose; and each entrant's positions/s."""
    means = {(r["entrant"], b): statistics.mean(r["val"][str(b)]) for r in rows for b in budgets if str(b) in r["val"]}
    lowest = {b: min((v for (_, at), v in means.items() if at == b), default=None) for b in budgets}
    head = " | ".join(f"{b:g} s" for b in budgets)
    lines = [
        "Val of one run per budget of training seconds, scheduled by that budget, on the lecture's split;",
        "where several seeds ran, their mean and spread (highest less lowest). Bold: the budget's lowest.",
        "",
        f"| model | {head} | positions/s |",
        f"| --- | {' | '.join('---:' for _ in budgets)} | ---: |",
    ]
    for r in rows:
        cells = []
        for b in budgets:
            vals = r["val"].get(str(b))
            if not vals:
                cells.append("-")
                continue
            cell = f"{statistics.mean(vals):.4f}"
            cell = f"**{cell}**" if means[r["entrant"], b] == lowest[b] else cell
            cells.append(cell + (f" ({max(vals) - min(vals):.4f}, {len(vals)} seeds)" if len(vals) > 1 else ""))
        lines.append(f"| {r['entrant']} | {' | '.join(cells)} | {r['positions_per_second']:,.0f} |")
    conv = next((r for r in rows if r["entrant"] == CONV), None)
    if conv is not None:
        lines.append(f"| conv's lead over the best other | {' | '.join(_lead(conv, rows, b) for b in budgets)} | |")
        sizes = [_size(conv["chosen"].get(str(b)), conv["rates"].get(str(b))) for b in budgets]
        lines.append(f"| the size conv chose, and its positions/s | {' | '.join(sizes)} | |")
    return "\n".join(lines) + "\n"


def _lead(conv: dict, rows: list[dict], seconds: float) -> str:
    """How far conv's mean val is below the best other entrant's at a budget; a tie when it is within
    either one's spread over seeds."""
    mine = conv["val"].get(str(seconds))
    others = [r["val"][str(seconds)] for r in rows if r is not conv and r["val"].get(str(seconds))]
    if not mine or not others:
        return "-"
    theirs = min(others, key=statistics.mean)
    lead = statistics.mean(theirs) - statistics.mean(mine)
    spread = max(max(v) - min(v) for v in (mine, theirs))
    return f"{lead:+.4f}" + (" (a tie)" if abs(lead) <= spread and min(len(mine), len(theirs)) > 1 else "")


def _size(chosen: str | None, rate: float | None) -> str:
    """The size in a --max-time choice's line (budget.Choice.line), and the rate it trained at."""
    if not chosen:
        return "-"
    return f"{budget.chosen_size(chosen)}, {rate:,.0f}"
