"""The experiment harness: the lecture's presets and sweeps, both resumable."""

import json
import math
import re
from pathlib import Path

import pytest
import torch

from wavenet_names import experiments, race, runs
from wavenet_names.cli import main
from wavenet_names.configuration import TrainConfig
from wavenet_names.experiments import SweepConfig
from wavenet_names.fitting import TrainingInterrupted, fit
from wavenet_names.models import ModelConfig
from wavenet_names.plots import curve_label
from wavenet_names.splits import Splits

from helpers import run_script


@pytest.fixture
def splits(all_words, vocab):
    return Splits.from_words(all_words[:300], vocab)  # the full vocabulary: the lecture's parameter counts


def plain(trainer, out):
    fit(trainer, out)


def never(trainer, out):
    raise AssertionError("a finished run was trained again")


def test_lecture_presets_run_and_read_back(tmp_path, splits):
    rows = experiments.lecture_table(splits, "tiny.txt", tmp_path, plain, scale=2000)  # 100 steps each
    assert [r["preset"] for r in rows] == [p.name for p in experiments.LECTURE_PRESETS]
    assert [r["params"] for r in rows] == [12097, 22097, 22397, 22397, 76579, 76579]
    assert [r["lecture_val_loss"] for r in rows[:5]] == [2.105, 2.027, 2.029, 2.022, 1.993]
    assert all(r["steps"] == 100 for r in rows[:5]) and rows[5]["steps"] == 2
    table = (tmp_path / "results.md").read_text()
    assert all(p.name in table for p in experiments.LECTURE_PRESETS)
    assert json.loads((tmp_path / "results.json").read_text()) == rows
    assert experiments.lecture_table(splits, "tiny.txt", tmp_path, never, scale=2000) == rows


def small(splits, **train):
    model = ModelConfig.of("conv", splits.facts, n_embd=8, n_hidden=16, n_layers=2)
    return model, TrainConfig(**{"steps": 20, "batch_size": 16, "eval_every": 5, **train})


def test_an_interrupted_run_continues(tmp_path, splits):
    model, config = small(splits)

    def interrupted(trainer, out):
        fit(trainer, out, should_stop=lambda: trainer.step == 8)

    with pytest.raises(TrainingInterrupted):
        runs.run(model, config, splits, tmp_path, interrupted)
    metrics = runs.run(model, config, splits, tmp_path, plain)
    assert metrics["steps"] == 20
    other_model, other = small(splits, steps=30)
    with pytest.raises(ValueError, match="other settings"):
        runs.run(other_model, other, splits, tmp_path, plain)


def test_sweep_grid_and_random(tmp_path, splits):
    config_file = tmp_path / "sweep.json"
    base = {"steps": 6, "eval_every": 3, "batch_size": 8, "n_embd": 8, "n_layers": 2}
    config_file.write_text(json.dumps({"base": base, "grid": {"lr": [0.001, 0.01], "n_hidden": [8]}, "seeds": [1, 2]}))
    config = SweepConfig.load(config_file)
    rows = experiments.sweep(config, splits, "tiny.txt", tmp_path / "out", plain)
    assert [r["run"] for r in rows] == [
        "lr=0.001,n_hidden=8,seed=1",
        "lr=0.001,n_hidden=8,seed=2",
        "lr=0.01,n_hidden=8,seed=1",
        "lr=0.01,n_hidden=8,seed=2",
    ]
    lines = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["run"] for line in lines] == [r["run"] for r in rows]
    assert rows[0]["val_loss"] != rows[2]["val_loss"]  # the options reached the runs
    assert experiments.sweep(config, splits, "tiny.txt", tmp_path / "out", never) == rows

    random_search = SweepConfig(base, {"lr": [0.001, 0.01, 0.1], "n_hidden": [8, 16]}, [1], "random", 3)
    points = random_search.points()
    assert len(points) == 3 and points == random_search.points()  # fixed for a given file


def test_a_diverging_point_is_a_row_of_nan_and_the_sweep_goes_on(tmp_path, splits):
    base = {"steps": 10, "eval_every": 5, "batch_size": 16, "n_embd": 8, "n_hidden": 16, "n_layers": 2}
    config = SweepConfig(base, {"lr": [1e9, 0.01]}, [1])

    def diverging(trainer, out):  # what a learning rate of 1e9 does, whatever the machine's arithmetic
        if trainer.config.lr > 1:
            with torch.no_grad():
                for p in trainer.model.parameters():
                    p.fill_(math.nan)
        fit(trainer, out)

    rows = experiments.sweep(config, splits, "tiny.txt", tmp_path, diverging)
    assert [r["run"] for r in rows] == ["lr=1000000000.0,seed=1", "lr=0.01,seed=1"]
    assert math.isnan(rows[0]["val_loss"]) and math.isfinite(rows[1]["val_loss"])
    metrics = json.loads((tmp_path / "runs" / rows[0]["run"] / "metrics.json").read_text())
    assert metrics["steps"] == 5 and "training diverged: the validation loss is nan at step 5" in metrics["diverged"]
    assert "| lr=1000000000.0 | " in (tmp_path / "summary.md").read_text()
    again = experiments.sweep(config, splits, "tiny.txt", tmp_path, never)  # read back, not trained again
    assert json.dumps(again) == json.dumps(rows)  # (nan != nan, so compared as text)


def test_sweep_named_runs_and_summary(tmp_path, splits):
    base = {"steps": 6, "eval_every": 3, "batch_size": 8, "n_embd": 8, "n_layers": 2}
    runs = [{"name": "narrow", "n_hidden": 8}, {"name": "wide", "n_hidden": 32}]
    config = SweepConfig(base, {"lr": [0.01]}, [1, 2], runs=runs)
    rows = experiments.sweep(config, splits, "tiny.txt", tmp_path, plain)
    settings = ["narrow,n_hidden=8,lr=0.01", "wide,n_hidden=32,lr=0.01"]
    assert [r["run"] for r in rows] == [f"{s},seed={seed}" for s in settings for seed in (1, 2)]
    assert rows[0]["params"] < rows[2]["params"]  # each run's options reached its model

    summary = (tmp_path / "summary.md").read_text().splitlines()[2:]
    assert [line.split(" | ")[0] for line in summary] == [f"| {s}" for s in settings]
    for line, pair in zip(summary, (rows[:2], rows[2:]), strict=True):
        cells = line.split(" | ")
        vals = [r["val_loss"] for r in pair]
        assert cells[2] == "2" and float(cells[3]) == pytest.approx(sum(vals) / 2, abs=1e-4)
        assert float(cells[4]) == pytest.approx(abs(vals[0] - vals[1]), abs=1e-4)


def test_sweep_command_prints_the_summary(tmp_path, capsys, all_words):
    data = tmp_path / "names.txt"
    data.write_text("\n".join(all_words[:300]) + "\n")
    runs = [{"name": "a", "n_hidden": 8}, {"name": "b", "n_hidden": 16}]
    base = {"steps": 4, "eval_every": 2, "batch_size": 8, "n_embd": 8, "n_layers": 2}
    config = tmp_path / "sweep.json"
    config.write_text(json.dumps({"base": base, "runs": runs, "seeds": [1]}))
    out = tmp_path / "out"
    assert main(["experiment", "sweep", "--config", str(config), "--out", str(out), "--data", str(data)]) == 0
    printed = capsys.readouterr().out
    assert (out / "summary.md").read_text() in printed
    assert "| a,n_hidden=8 |" in printed and "| b,n_hidden=16 |" in printed


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such sweep file"),
        ("{not json", "not a JSON sweep file"),
        ('{"grid": {"lr": [0.1]}, "colour": 1}', "unknown key 'colour'"),
        ('{"grid": {"learning_rate": [0.1]}}', "'learning_rate' is not an option"),
        ('{"grid": {"lr": []}}', "non-empty list"),
        ('{"grid": {"lr": [0.1]}, "search": "random"}', 'needs "samples"'),
        ('{"grid": {"seed": [1, 2]}}', "seeds go in"),
        ('{"runs": []}', "non-empty list"),
        ('{"runs": [{"n_hidden": 8}]}', 'needs a "name"'),
        ('{"runs": [{"name": "a"}, {"name": "a"}]}', 'needs a "name" of its own'),
        ('{"runs": [{"name": "a", "width": 8}]}', "'width' is not an option"),
        ('{"runs": [{"name": "a", "lr": 0.1}], "grid": {"lr": [0.1]}}', "set by both run 'a' and \"grid\""),
    ],
)
def test_bad_sweep_files(tmp_path, capsys, content, message):
    path = tmp_path / "sweep.json"
    if content is not None:
        path.write_text(content)
    assert main(["experiment", "sweep", "--config", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_loss_against_time_draws_runs_and_refuses_what_is_not_one(tmp_path):
    """experiments/loss_vs_time.py: a curve per run from its metrics.jsonl; anything else is one line."""

    script = Path(__file__).resolve().parents[1] / "experiments" / "loss_vs_time.py"
    fast, slow = tmp_path / "fast.jsonl", tmp_path / "slow"
    fast.write_text(
        "".join(json.dumps({"step": s, "seconds": s / 10, "val_loss": 3 - s / 100}) + "\n" for s in (10, 20, 30))
    )
    slow.mkdir()
    (slow / "metrics.jsonl").write_text(json.dumps({"step": 5, "seconds": 100.0, "val_loss": 2.5}) + "\n")
    out = tmp_path / "curves.png"
    done = run_script(script, f"fast={fast}", f"slow={slow}", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "other.jsonl").write_text('{"step": 1}\n')
    for bad, problem in [
        (f"fast{fast}", "give LABEL=RUN"),
        (f"x={tmp_path / 'none.jsonl'}", "No such file"),
        (f"x={tmp_path / 'other.jsonl'}", "no records with seconds and val_loss"),
    ]:
        refused = run_script(script, bad, "--out", str(tmp_path / "bad.png"))
        assert refused.returncode == 2 and problem in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad.png").exists()


def test_ensemble_size_tables_what_each_model_adds(tmp_path):
    """experiments/ensemble_size.py: the mean over runs of the first k models' val loss, with its change
    and spread; a run that is not an ensemble's is one line."""

    script = Path(__file__).resolve().parents[1] / "experiments" / "ensemble_size.py"
    runs = []
    for i, losses in enumerate([(2.0, 1.9, 1.85), (2.2, 2.1)]):  # the second run has 2 models: 2 rows
        run = tmp_path / f"run-{i}"
        run.mkdir()
        records = [{"members": k + 1, "seconds": 10.0 * (k + 1), "val_loss": v} for k, v in enumerate(losses)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        runs.append(str(run))
    done = run_script(script, *runs)
    assert done.returncode == 0, done.stderr
    rows = [line.split(" | ") for line in done.stdout.splitlines()[2:]]
    assert len(rows) == 2
    assert rows[0][1:4] == ["2.1000", "-", "0.2000"] and rows[1][1:4] == ["2.0000", "-0.1000", "0.2000"]
    assert rows[1][5].strip(" |") == "20"
    (tmp_path / "single.jsonl").write_text(json.dumps({"step": 5, "seconds": 1.0, "val_loss": 2.0}) + "\n")
    refused = run_script(script, str(tmp_path / "single.jsonl"))
    assert refused.returncode == 2 and "not an ensemble's metrics.jsonl" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_conditioning_reports_loss_and_how_samples_follow_their_labels(tmp_path, small_table_file):
    """experiments/conditioning.py on a conditional run and its labels-hidden twin: their losses, the
    shares of samples that follow sex and decade (each a percentage, and the sex shares of the names
    found in the data), and sample lines; given two runs without labels, one line."""

    tiny = [
        "--data",
        str(small_table_file),
        "--steps",
        "20",
        "--eval-every",
        "10",
        "--n-embd",
        "8",
        "--n-hidden",
        "16",
        "--n-layers",
        "2",
        "--samples",
        "0",
    ]
    assert main(["train", *tiny, "--out", str(tmp_path / "labels")]) == 0
    assert main(["train", *tiny, "--no-labels", "--out", str(tmp_path / "hidden")]) == 0
    script = Path(__file__).resolve().parents[1] / "experiments" / "conditioning.py"
    report = run_script(script, str(tmp_path / "labels"), str(tmp_path / "hidden"))
    assert report.returncode == 0, report.stderr
    metrics = json.loads((tmp_path / "labels" / "metrics.json").read_text())
    assert f"| with labels | {metrics['train_loss']:.4f} | {metrics['val_loss']:.4f} |" in report.stdout
    sex = re.findall(r"^\| sex=([FM]) \| [\d.]+% \| \*\*([\d.]+%|-)\*\* \|", report.stdout, re.MULTILINE)
    assert [s for s, _ in sex] == ["F", "M"]  # "-": none of a tiny model's samples is a name of the data
    assert (
        len(
            re.findall(
                r"^\| (1900|1950|2000) \| \*\*[\d.]+%\*\* \| [\d.]+% \| [\d.]+% \|$", report.stdout, re.MULTILINE
            )
        )
        == 3
    )
    assert "| sex=F decade=1920 | " in report.stdout and "| no label | " in report.stdout
    refused = run_script(script, str(tmp_path / "hidden"), str(tmp_path / "hidden"))
    assert refused.returncode == 2 and "not a model labelled with sex and decade" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_the_race_trains_one_run_per_budget_scheduled_by_it_and_reads_back(tmp_path, splits):
    """The convolution with --max-time alone and a small GRU, at budgets of 0.2 and 0.4 s, the second
    seeded twice: each budget is a run of its own, scheduled by it; conv's size is chosen and kept;
    the table gives each budget's mean and spread, conv's lead and its size; and the same race again
    trains nothing."""
    entrants = (
        race.Entrant(race.CONV, {"model": "conv", "eval_every": 1000}),
        race.Entrant("gru", {"model": "gru", "n_embd": 8, "n_hidden": 8, "eval_every": 1000}),
    )
    rows = race.race(splits, "tiny.txt", tmp_path, plain, (0.2, 0.4), entrants, seeded=(0.4,), seeds=2)
    assert [r["entrant"] for r in rows] == [race.CONV, "gru"]
    for row in rows:
        assert [len(row["val"][b]) for b in ("0.2", "0.4")] == [1, 2]  # conv and the best (only) other, seeded
        for directory in (tmp_path / race._slug(row["entrant"])).iterdir():
            metrics = json.loads((directory / "metrics.json").read_text())
            budget = float(directory.name.split("s-seed")[0])
            assert metrics["train_config"]["max_time"] == budget and metrics["train_config"]["steps"] is None
            assert metrics["seconds"] >= budget  # one run, to its own budget
            assert ("chosen" in metrics) == (row["entrant"] == race.CONV)
    conv = rows[0]
    assert all(conv["chosen"][b].startswith("--max-time chose the defaults") for b in ("0.2", "0.4"))
    table = (tmp_path / "results.md").read_text()
    assert "| 0.2 s | 0.4 s |" in table and " 2 seeds)" in table
    sizes = r"\| the size conv chose, and its positions/s \| the defaults, [\d,]+ \| the defaults, [\d,]+ \|"
    assert re.search(sizes, table) and "| conv's lead over the best other |" in table
    assert (tmp_path / "race.png").stat().st_size > 0
    assert race.race(splits, "tiny.txt", tmp_path, never, (0.2, 0.4), entrants, seeded=(0.4,), seeds=2) == rows


def test_a_curves_legend_gives_its_lowest_val_and_when():
    """A race's curve is one run per budget, so its lowest val need not be its last budget's."""
    records = [
        {"seconds": 150.0, "val_loss": 1.9731},
        {"seconds": 300.0, "val_loss": 1.9707},
        {"seconds": 600.0, "val_loss": 1.9801},
    ]
    assert curve_label("tree", records) == "tree: 1.9707 at 300 s"


def test_race_budgets_must_be_seconds(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["experiment", "race", "--budgets", "30,soon"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "expected seconds separated by commas, such as 30,60, got '30,soon'" in err[0]


def test_race_models_must_be_kinds(capsys):
    assert main(["experiment", "race", "--models", "conv,lstm"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "wavenet-names experiment: error: --models names 'lstm', which is no kind of model: conv, hierarchical, "
        "flat, transformer and gru"
    ]
