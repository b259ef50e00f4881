"""Data-parallel training: 2 CPU ranks (gloo), started as torchrun starts them, train the model that
one process trains on the whole batch, and their checkpoint resumes in a single process. The ranks
run under torchrun; the single-process runs are in this process."""

import pytest

from wavenet_names.checkpoint import load_checkpoint
from wavenet_names.cli import main

from helpers import TINY, tiny, torchrun

pytestmark = pytest.mark.slow  # every test here starts processes


# each rank draws its own dropout: the single process's draws are not theirs
SHARED = [*TINY, "--eval-every", "10", "--samples", "2", "--seed", "3", "--dropout", "0"]
LAUNCH = ["--standalone", "--nproc_per_node=2", "-m", "wavenet_names"]


@pytest.mark.parametrize(
    "model, data", [("hierarchical", "list"), ("conv", "table"), ("transformer", "list"), ("gru", "list")]
)
def test_two_ranks_train_the_single_process_model(tmp_path, small_data_file, small_table_file, model, data, capsys):
    """The per-position model; with a table a conditional one, each rank's names bringing their labels
    and their start rows; and makemore's Transformer and GRU, models of whole names without BatchNorm.
    (The conv model on a list is test_restarts.py's: its runs saved by 2 ranks and continued by 1, or
    the other way round, end as one process trains it.)"""
    data_file = small_table_file if data == "table" else small_data_file
    args = [
        "train",
        "--model",
        model,
        "--data",
        str(data_file),
        *tiny(model, SHARED),
        "--steps",
        "20",
        "--batch-size",
        "32",
    ]
    args += ["--patience", "2", "--max-time", "3600"]  # never met here, but their checks are collectives on 2 ranks
    if data == "table":
        args += ["--label-dropout", "0"]  # each rank draws its own: the single process's draws are not theirs
    two = torchrun(*LAUNCH, *args, "--out", str(tmp_path / "two"))
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    a, b = load_checkpoint(tmp_path / "two" / "last.pt"), load_checkpoint(tmp_path / "one" / "last.pt")
    assert a["step"] == b["step"] == 20
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"]
    assert (data == "table") == (a["labels"] is not None) == any(k.startswith("labels.") for k in a["model"])
    for key in b["model"]:  # weights and BatchNorm running statistics alike
        one, other = a["model"][key].float(), b["model"][key].float()
        if key.endswith("attn.c_attn.bias"):  # the keys' bias moves no attention weight (softmax ignores a
            one, other = (t.view(3, -1)[[0, 2]] for t in (one, other))  # shift): its gradient is rounding alone
        diff = (one - other).abs().max().item()
        assert diff <= 1e-5, f"{key}: {diff}"
    assert sum(line.startswith("best model ") for line in two.stdout.splitlines()) == 1  # rank 0 alone reports

    capsys.readouterr()
    assert main(["train", "--out", str(tmp_path / "two"), "--resume", "--steps", "25", "--samples", "0"]) == 0
    assert load_checkpoint(tmp_path / "two" / "last.pt")["step"] == 25
    assert "val" in capsys.readouterr().out


def test_two_ranks_train_for_the_time_on_one_clock(tmp_path, small_data_file):
    """--max-time alone: both ranks time the ladder and choose alike, follow one schedule by the
    slowest rank's clock, and stop at the same step (a rank that stopped alone would leave the other
    waiting in a collective, and this would not return)."""
    out = tmp_path / "two"
    args = ["train", "--data", str(small_data_file), "--max-time", "2", "--eval-every", "1000", "--samples", "0"]
    two = torchrun(*LAUNCH, *args, "--out", str(out))
    chosen = [line for line in two.stdout.splitlines() if line.startswith("--max-time chose")]
    assert len(chosen) == 1  # rank 0 alone says it
    saved = load_checkpoint(out / "last.pt")
    assert saved["chosen"] == chosen[0] and saved["train_config"]["steps"] is None
    assert saved["seconds"] >= 2.0 and saved["history"][-1]["step"] == saved["step"]
