"""The models that come with the package: each one is what trained.json says it is, under 1 MB, and
the one that `sample` reads before any training; a slim checkpoint samples as its run's model.pt."""

import json
from pathlib import Path

import pytest
import torch

from wavenet_names import distill, experiments, presets, shipped
from wavenet_names.checkpoint import label_columns, load_checkpoint, load_model, save_checkpoint
from wavenet_names.cli import main
from wavenet_names.data import NAMES_TXT
from wavenet_names.fitting import fit
from wavenet_names.models import batches_for
from wavenet_names.scoring import evaluate
from wavenet_names.splits import Splits
from wavenet_names.words import training_data

from helpers import TINY


@pytest.mark.parametrize("name", list(shipped.SHIPPED))
def test_a_shipped_model_has_the_val_loss_recorded_beside_it(name):
    path = shipped.path_of(name)
    assert path.stat().st_size < 1_000_000
    model, vocab, checkpoint = load_model(path)
    assert Path(training_data(checkpoint)) == shipped.SHIPPED[name].data
    splits = Splits.read(training_data(checkpoint), vocab, label_columns(checkpoint))
    assert splits.fingerprint == checkpoint["data_fingerprint"]  # the lecture's split of the same data
    recorded = shipped.record()[name]
    assert evaluate(model, batches_for(model, splits, "val")) == pytest.approx(recorded["val_loss"], abs=1e-5)
    assert recorded["steps"] == distill.STUDENT["steps"] and recorded["val_loss"] < 2.0  # the student's whole recipe


def test_sample_before_any_training_reads_the_shipped_names_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no out/model.pt here
    assert main(["sample", "-n", "20", "--seed", "0"]) == 0
    plain = capsys.readouterr().out.splitlines()
    assert len(plain) == 20
    assert main(["sample", "-n", "20", "--seed", "0", "--checkpoint", "names"]) == 0
    assert capsys.readouterr().out.splitlines() == plain
    assert any(line.endswith(" *") for line in plain)  # a trained model: some names of its data come again
    assert main(["evaluate", "--checkpoint", "names"]) == 0
    assert capsys.readouterr().out == f"val {shipped.record()['names']['val_loss']:.4f}\n"


def test_the_shipped_names_by_decade_model_takes_labels(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["sample", "--checkpoint", "names-by-decade", "-n", "5", "--seed", "0", "--label", "sex=F"]
    assert main([*args, "--label", "decade=1920"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 5
    assert main([*args, "--label", "decade=1925"]) == 2
    assert "'1925' is not a value of decade" in capsys.readouterr().err


def test_out_model_pt_comes_before_the_shipped_model(tmp_path, monkeypatch, small_data_file, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--data", str(small_data_file), "--steps", "2", "--eval-every", "2", *TINY]) == 0
    capsys.readouterr()
    assert main(["evaluate"]) == 0
    assert capsys.readouterr().out == f"val {json.loads(Path('out/metrics.json').read_text())['val_loss']:.4f}\n"


def test_a_missing_shipped_model_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shipped, "DIRECTORY", tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["sample", "--checkpoint", "names"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "wavenet-names sample: error: --checkpoint names: the shipped model is missing; wavenet-names ship rebuilds it"
    ]


def test_a_slim_checkpoint_samples_marks_and_scores_as_its_run(tmp_path, capsys):
    data = tmp_path / "names.txt"  # eight names, learnt in a few steps: the samples hold some, marked *
    data.write_text("".join(f"{name}\n" for name in ["anna", "bob", "eve", "ida", "amy", "zoe", "liv", "max"] * 4))
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), "--steps", "150", *TINY, "--lr", "0.03"]) == 0
    full = load_checkpoint(out / "model.pt")
    slim = shipped.slim(full, NAMES_TXT)
    assert "optimizer" not in slim and slim["dataset"] == "names.txt"
    save_checkpoint(slim, tmp_path / "slim.pt")
    assert (tmp_path / "slim.pt").stat().st_size < (out / "model.pt").stat().st_size / 2
    outputs = []
    for path in (out / "model.pt", tmp_path / "slim.pt"):
        capsys.readouterr()
        assert main(["sample", "--checkpoint", str(path), "-n", "200", "--seed", "0"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and " *" in outputs[0]
    slim_state, full_state = load_model(tmp_path / "slim.pt")[0].state_dict(), load_model(out)[0].state_dict()
    assert all(torch.equal(slim_state[k], full_state[k]) for k in full_state)


def test_ship_distils_each_model_from_its_teacher_and_records_how(tmp_path, monkeypatch, small_data_file):
    """`wavenet-names ship`, its recipes made tiny: a teacher ensemble, then the default-size student
    taught by it, written slim with what made it; run again, it reads both runs back."""
    tiny_max = {"model": "conv", "n_embd": 8, "n_hidden": 16, "n_layers": 2, "steps": 4, "batch_size": 16}
    tiny_max |= {"eval_every": 2, "members": 2, "members_at_once": 1, "report_test": True}
    monkeypatch.setitem(presets.TRAIN_PRESETS, "max", presets.Preset("max", "tiny", tiny_max))
    monkeypatch.setattr(experiments, "STUDENT", {**distill.STUDENT, "steps": 4, "eval_every": 2})
    model = shipped.ShippedModel("names", small_data_file, "a test's")
    monkeypatch.setattr(shipped, "SHIPPED", {"names": model})
    written = experiments.ship(lambda trainer, out: fit(trainer, out), tmp_path / "runs", tmp_path / "trained")
    teacher = json.loads((tmp_path / "runs" / "names-teacher" / "metrics.json").read_text())
    assert teacher["train_config"]["members"] == 2
    record = shipped.record(tmp_path / "trained")["names"]
    assert record == written["names"] and record["params"] == 76_579 and record["steps"] == 4
    assert record["distilled"]["teacher_val_loss"] == teacher["val_loss"]
    assert record["distilled"]["distill_weight"] == distill.STUDENT["distill_weight"]
    student = load_checkpoint(shipped.path_of("names", tmp_path / "trained"))
    assert student["train_config"]["teacher"] == str(tmp_path / "runs" / "names-teacher")
    before = (tmp_path / "runs" / "names" / "model.pt").stat().st_mtime_ns
    assert experiments.ship(lambda trainer, out: fit(trainer, out), tmp_path / "runs", tmp_path / "trained") == written
    assert (tmp_path / "runs" / "names" / "model.pt").stat().st_mtime_ns == before  # read back, not trained again
