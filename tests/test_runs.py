"""What `train` does (runs.py): a run starts, writes everything and says what it wrote, resumes
exactly, refuses to overwrite an earlier run, stops early and says why, survives Ctrl-C at its end,
reports a divergence in one line, and shows samples, a test loss or TensorBoard logs when asked."""

import json
import math
import os
import sys

import pytest
import torch

from wavenet_names.checkpoint import load_checkpoint
from wavenet_names.cli import main
from wavenet_names.logs import SCALARS
from wavenet_names.splits import Splits
from wavenet_names.training import Trainer
from wavenet_names.words import read_words

from helpers import TINY, one_error, run_cli


def test_train_writes_everything(trained):
    for name in ("model.pt", "last.pt", "loss.png", "metrics.jsonl", "metrics.json"):
        assert (trained / name).stat().st_size > 0, name
    metrics = json.loads((trained / "metrics.json").read_text())
    assert {"train_loss", "val_loss", "steps", "seconds"} <= metrics.keys()
    assert metrics["steps"] == 20
    assert metrics["epochs"] == pytest.approx(20 * 16 / 320)  # 20 batches of 16 names, 320 names in train
    assert len((trained / "metrics.jsonl").read_text().splitlines()) == 4
    assert (trained / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_logged_to_a_file_writes_a_line_per_evaluation_and_no_progress_bar(small_data_file, tmp_path, capsys):
    """Output that is not a terminal (a log file, CI, a pipe, as pytest's capture is) gets the
    evaluation lines, not a bar's carriage-return updates, one per step."""
    args = [
        "train",
        "--data",
        str(small_data_file),
        "--out",
        str(tmp_path),
        "--steps",
        "40",
        "--eval-every",
        "10",
        *TINY,
    ]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "\r" not in err and "it/s" not in err and "step/s" not in err, err
    steps = [line.split()[1] for line in out.splitlines() if line.startswith("step ")]
    assert steps == ["10", "20", "30", "40"]


def test_resume_continues_exactly(tmp_path, small_data_file):
    common = ["--data", str(small_data_file), "--schedule", "constant", "--eval-every", "5", *TINY]
    assert main(["train", "--out", str(tmp_path / "a"), "--steps", "20", *common]) == 0
    assert main(["train", "--out", str(tmp_path / "b"), "--steps", "10", *common]) == 0
    resume = ["train", "--out", str(tmp_path / "b"), "--steps", "20", "--resume", "--samples", "0", "--device", "cpu"]
    assert main(resume) == 0  # --device, --steps: what a resumed run may change
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert b["step"] == 20
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_the_lectures_models_train(tmp_path, small_data_file, capsys):
    for model in ("hierarchical", "flat"):
        args = [
            "train",
            "--model",
            model,
            "--data",
            str(small_data_file),
            "--out",
            str(tmp_path / model),
            "--steps",
            "30",
        ]
        assert main([*args, "--n-hidden", "16", "--samples", "2"]) == 0
        assert load_checkpoint(tmp_path / model / "model.pt")["train_config"]["optimizer"] == "sgd"
        windows = sum(
            len(w) + 1 for w in Splits.from_words(read_words(small_data_file)).train
        )  # an epoch: every window
        epochs = 30 * 32 / windows  # 30 batches of the lecture's 32 windows
        assert f"30 steps, {epochs:.2g} epochs, " in capsys.readouterr().out
        metrics = json.loads((tmp_path / model / "metrics.json").read_text())
        assert metrics["epochs"] == pytest.approx(epochs)


def test_training_into_an_earlier_run_needs_resume_or_overwrite(trained, small_data_file, capsys):
    before = (trained / "model.pt").read_bytes()
    assert main(["train", "--data", str(small_data_file), "--out", str(trained), "--steps", "2"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (trained / "model.pt").read_bytes() == before


@pytest.mark.slow  # starts a process
def test_compile_without_a_compiler_is_one_line_and_harms_nothing(trained, small_data_file, tmp_path):
    """The real failure: inductor finds no C++ compiler (CXX points at /bin/false, and an empty cache
    holds no kernels compiled earlier). Over an earlier run with --overwrite, which is left whole. In a
    process of its own: inductor leaves threads behind, and a process forked after them can deadlock
    (test_restarts.py forks its runs)."""
    before = {name: (trained / name).read_bytes() for name in ("model.pt", "last.pt", "metrics.json", "metrics.jsonl")}
    env = {**os.environ, "CXX": "/bin/false", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache")}
    args = [
        "train",
        "--data",
        str(small_data_file),
        "--out",
        str(trained),
        "--overwrite",
        "--compile",
        "--steps",
        "5",
        *TINY,
    ]
    status, _, err = run_cli(*args, env=env)
    errors = [line for line in err.splitlines() if "error" in line or "Traceback" in line]
    assert status == 2, err
    assert len(errors) == 1 and "--compile failed: torch.compile raised InvalidCxxCompiler" in errors[0], err
    for name, content in before.items():
        assert (trained / name).read_bytes() == content, f"{name} changed"


def test_ctrl_c_during_the_final_figures_says_resume_finishes_them(tmp_path, small_data_file, monkeypatch, capsys):
    """After the last step, train computes the loss over the whole training split (a minute on a
    large list). Ctrl-C there loses no training: it says so, and --resume writes the figures."""
    import wavenet_names.runs as runs

    def interrupted(trainer, out):
        raise KeyboardInterrupt

    out = tmp_path / "run"
    args = ["train", "--data", str(small_data_file), "--out", str(out), "--steps", "10", "--eval-every", "5", *TINY]
    with monkeypatch.context() as patch:
        patch.setattr(runs, "finish", interrupted)
        assert main(args) == 130
    err = capsys.readouterr().err
    assert (
        f"interrupted at step 10; saved {out / 'last.pt'}; continue with: wavenet-names train --out {out} --resume"
        in err
    )
    assert not (out / "metrics.json").exists()
    assert main(["train", "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "metrics.json").read_text())["steps"] == 10


def test_a_diverging_run_stops_with_one_line_and_keeps_its_best_model(tmp_path, small_data_file, monkeypatch, capsys):
    """The weights turn nan at step 7, as a learning rate far too high makes them (on this tiny model
    --lr 1e6 does, but when depends on the machine's arithmetic): the evaluation at step 10 stops."""
    step = Trainer.train_step

    def diverging(self, seconds=0.0):
        result = step(self, seconds)
        if self.step == 7:
            with torch.no_grad():
                for p in self.model.parameters():
                    p.fill_(math.nan)
        return result

    monkeypatch.setattr(Trainer, "train_step", diverging)
    out = tmp_path / "run"
    args = ["train", "--data", str(small_data_file), "--out", str(out), "--steps", "20", "--eval-every", "5", *TINY]
    assert main(args) == 2
    err = capsys.readouterr().err.splitlines()[-1]  # after the progress bar
    assert err == (
        "wavenet-names train: error: training diverged: the validation loss is nan at step 10; try a "
        "smaller --lr (model.pt keeps the best model, from step 5)"
    )
    for name in ("model.pt", "last.pt"):  # as the last finite evaluation left them
        assert load_checkpoint(out / name)["step"] == 5
    assert not (out / "metrics.json").exists()


def test_preset_best_reports_the_test_loss_once(tmp_path, small_data_file, capsys):
    out = tmp_path / "best"
    args = ["train", "--preset", "best", "--data", str(small_data_file), "--out", str(out), "--steps", "4", *TINY]
    assert main([*args, "--eval-every", "2"]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_config"]["report_test"] is True
    test_lines = [line for line in printed.splitlines() if line.startswith("test ")]
    assert len(test_lines) == 1 and test_lines[0].startswith(f"test {metrics['test_loss']:.4f}")
    assert metrics["model"]["n_hidden"] == 16  # an option given after the preset wins
    best = load_checkpoint(out / "model.pt")
    assert best["train_config"]["report_test"] is True and "test_loss" not in best  # never used to choose


def test_without_report_test_there_is_no_test_loss(trained):
    assert "test_loss" not in json.loads((trained / "metrics.json").read_text())


def test_an_option_a_kind_does_not_read_is_refused(small_data_file, tmp_path, capsys):
    """--model flat --n-layers 4 trained the block-3 model: flat's context is --block-size."""
    args = ["train", "--data", str(small_data_file), "--out", str(tmp_path), "--model", "flat", "--steps", "2"]
    assert main([*args, "--n-layers", "4"]) == 2
    assert one_error(capsys) == (
        "wavenet-names train: error: --n-layers is not an option of the flat model, which takes --n-embd, "
        "--n-hidden and --block-size"
    )
    assert not any(tmp_path.iterdir())


def test_trains_last_lines_say_what_each_figure_is_and_every_file_written(small_data_file, tmp_path, capsys):
    """The final train figure is model.pt's over the whole split, not the step line's running mean;
    last.pt and metrics.jsonl were written but not listed."""
    args = ["--data", str(small_data_file), "--out", str(tmp_path), "--steps", "4", "--eval-every", "2"]
    assert main(["train", *args, *TINY]) == 0
    lines = capsys.readouterr().out.splitlines()
    steps = [line for line in lines if line.startswith("step ")]
    best, wrote = lines[len(steps)], lines[len(steps) + 1]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert best.startswith(
        f"best model (step {metrics['best_step']}): train {metrics['train_loss']:.4f}  "
        f"val {metrics['val_loss']:.4f}  over the whole splits  ("
    )
    listed = [name.split(" (")[0] for name in wrote.removeprefix("wrote ").split(", ")]
    assert sorted(listed) == sorted(str(path) for path in tmp_path.iterdir())  # every file, and no other


def test_a_run_stopped_early_says_where_and_why(small_data_file, tmp_path, capsys):
    args = ["--data", str(small_data_file), "--out", str(tmp_path), "--steps", "100", "--max-time", "1e-6"]
    assert main(["train", *args, *TINY]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [lines[0], "stopped at step 1 of 100: its --max-time of 1e-06 s of training is spent"]
    assert lines[0].startswith("step       1  train ") and lines[2].startswith("best model (step 1): ")


def test_samples_at_each_evaluation_leave_the_run_as_it_was(small_data_file, tmp_path, capsys):
    args = ["train", "--data", str(small_data_file), "--steps", "4", "--eval-every", "2", "--dropout", "0.2", *TINY]
    assert main([*args, "--out", str(tmp_path / "quiet")]) == 0
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "shown"), "--eval-samples", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    shown = [line for line in lines if line.startswith("  samples: ")]
    assert len(shown) == 2 and all(len(line.split(", ")) == 3 for line in shown)
    assert lines.index(shown[0]) == 1  # after its evaluation's line
    quiet, loud = (load_checkpoint(tmp_path / name / "last.pt") for name in ("quiet", "shown"))
    assert torch.equal(quiet["train_losses"], loud["train_losses"])  # dropout drew the same numbers
    assert all(torch.equal(quiet["model"][k], loud["model"][k]) for k in quiet["model"])


def test_tensorboard_logs_every_evaluation_as_metrics_jsonl_has_it(small_data_file, tmp_path, capsys, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = ["train", "--data", str(small_data_file), "--out", str(tmp_path / "run"), "--steps", "4"]
    assert main([*args, "--eval-every", "2", "--tensorboard", str(tmp_path / "tb"), *TINY]) == 0
    assert f"for TensorBoard in {tmp_path / 'tb'}" in capsys.readouterr().out
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    assert sorted(events.Tags()["scalars"]) == sorted(SCALARS)
    for tag, key in SCALARS.items():
        logged = [(e.step, e.value) for e in events.Scalars(tag)]
        assert logged == [(r["step"], pytest.approx(r[key], rel=1e-6)) for r in records], tag
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as without the tensorboard extra
    assert main([*args, "--overwrite", "--tensorboard", str(tmp_path / "tb2"), *TINY]) == 2
    assert "--tensorboard needs the tensorboard package: pip install" in one_error(capsys)
    assert not (tmp_path / "tb2").exists()
    assert [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()] == records
