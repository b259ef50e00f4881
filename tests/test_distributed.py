"""Data-parallel training: 2 CPU ranks (gloo), started as torchrun starts them, train the model that
one process trains on the whole batch, and their checkpoint resumes in a single process. The ranks
start as torchrun's workers, without torchrun (helpers.launch_ranks); tests/test_restarts.py runs
them under torchrun itself, and the single-process runs are in this process."""

import pytest

from wavenet_names.checkpoint import load_checkpoint
from wavenet_names.cli import main

from helpers import launch_ranks

pytestmark = pytest.mark.slow  # every test here starts processes

TINY = ["--n-embd", "8", "--n-hidden", "16", "--n-layers", "2", "--eval-every", "10", "--samples", "2", "--seed", "3"]


@pytest.mark.parametrize("model, data", [("hierarchical", "list"), ("conv", "table")])
def test_two_ranks_train_the_single_process_model(tmp_path, small_data_file, small_table_file, model, data, capsys):
    """The per-position model, and with a table a conditional one: each rank's names bring their labels,
    and their start rows. (The conv model on a list is test_restarts.py's: its runs saved by 2 ranks
    and continued by 1, or the other way round, end as one process trains it.)"""
    data_file = small_table_file if data == "table" else small_data_file
    args = ["train", "--model", model, "--data", str(data_file), "--steps", "20", "--batch-size", "32", *TINY]
    if data == "table":
        args += ["--label-dropout", "0"]  # each rank draws its own: the single process's draws are not theirs
    ranks = launch_ranks([*args, "--out", str(tmp_path / "two")], 2, tmp_path / "logs")
    assert [code for code, _ in ranks] == [0, 0], ranks
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    a, b = load_checkpoint(tmp_path / "two" / "last.pt"), load_checkpoint(tmp_path / "one" / "last.pt")
    assert a["step"] == b["step"] == 20
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"]
    assert (data == "table") == (a["labels"] is not None) == any(k.startswith("labels.") for k in a["model"])
    for key in b["model"]:  # weights and BatchNorm running statistics alike
        diff = (a["model"][key].float() - b["model"][key].float()).abs().max().item()
        assert diff <= 1e-5, f"{key}: {diff}"
    reports = [sum(line.startswith("train ") for line in output.splitlines()) for _, output in ranks]
    assert reports == [1, 0]  # rank 0 alone reports

    capsys.readouterr()
    assert main(["train", "--out", str(tmp_path / "two"), "--resume", "--steps", "25", "--samples", "0"]) == 0
    assert load_checkpoint(tmp_path / "two" / "last.pt")["step"] == 25
    assert "val" in capsys.readouterr().out
