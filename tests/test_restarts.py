"""Training that survives a lost process. A run killed with SIGKILL (no cleanup possible) continues
from OUT/last.pt, by hand with --resume or by itself when torchrun restarts its workers, and ends with
the weights of the same run uninterrupted. Files are only ever replaced whole, and a restart is told
from a fresh start by torchrun's run id, so that a run started by hand is still never overwritten.

Runs in one process are forked from this one (helpers.forked: torch already imported, a fraction of
a second each); torchrun's runs are its own processes.
"""

import json
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch

from wavenet_names import cli
from wavenet_names.checkpoint import load_checkpoint

from helpers import TINY, forked, joined, torchrun

pytestmark = pytest.mark.slow  # every test here starts processes

KILLER = str(Path(__file__).resolve().parent / "kill_at_step.py")  # kills one rank at a step (torchrun runs)
RUN = [*TINY, "--seed", "3", "--batch-size", "32"]  # (a batch that 2 and 3 ranks share)


def train(*argv, kill_at_step: int | None = None, env: dict | None = None) -> int:
    """`wavenet-names train ARGV` in a forked process; its exit status (-9: killed)."""
    return joined(forked(["train", *argv], env, kill_at_step))


@pytest.fixture(scope="module", autouse=True)
def warm():
    """What a run's first optimizer imports (torch's compiler machinery, a second), imported once here."""
    torch.optim.AdamW([torch.zeros(1, requires_grad=True)])


@pytest.fixture(scope="module")
def options(small_data_file):
    """24 steps, evaluated at 10 and 20 (and 24), saved every 4 between."""
    return ["--data", str(small_data_file), "--steps", "24", "--eval-every", "10", "--checkpoint-every", "4", *RUN]


def assert_same_run(a: Path, b: Path, tolerance: float = 1e-6):
    """The same weights and BatchNorm statistics, the same step, and the same evaluations."""
    one, other = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    assert one["step"] == other["step"]
    for key in one["model"]:
        diff = (one["model"][key].double() - other["model"][key].double()).abs().max().item()
        assert diff <= tolerance, f"{key}: {diff}"
    records = [[json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] for run in (a, b)]
    for mine, theirs in zip(*records, strict=True):
        assert mine["step"] == theirs["step"]
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], abs=tolerance)  # every step's, restarts or not
        assert mine["val_loss"] == pytest.approx(theirs["val_loss"], abs=tolerance)


def test_a_process_killed_mid_run_resumes_to_the_uninterrupted_weights(options, tmp_path):
    assert train(*options, "--out", str(tmp_path / "whole")) == 0
    assert train(*options, "--out", str(tmp_path / "killed"), kill_at_step=14) == -signal.SIGKILL
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["step"] == 12  # at most --checkpoint-every steps lost
    assert train(*options, "--out", str(tmp_path / "killed"), "--resume") == 0  # the same command, resumed
    assert_same_run(tmp_path / "killed", tmp_path / "whole", tolerance=0.0)


def test_torchrun_restarts_a_killed_rank_where_the_run_stopped(options, tmp_path):
    """2 gloo ranks; rank 1 dies at step 14; torchrun starts both again, and they continue from step 12
    without being told. With dropout, which draws from each rank's own random state, so that each
    rank must get its own back."""
    args = [*options, "--dropout", "0.2"]
    torchrun(
        "--standalone", "--nproc_per_node=2", "-m", "wavenet_names", "train", *args, "--out", str(tmp_path / "whole")
    )
    restarted = torchrun(
        "--standalone",
        "--nproc_per_node=2",
        "--max-restarts=1",
        KILLER,
        "train",
        *args,
        "--out",
        str(tmp_path / "killed"),
        env={"KILL_AT_STEP": "14", "KILL_RANK": "1"},
    )
    assert "continuing this run from" in restarted.stdout and "at step 12" in restarted.stdout
    assert_same_run(tmp_path / "killed", tmp_path / "whole")


@pytest.mark.parametrize("ranks", ["2 then 1", "1 then 2"])
def test_a_restart_with_another_number_of_ranks_keeps_the_global_batch(ranks, options, tmp_path):
    """Saved by 2 ranks and continued by 1 (an elastic job that lost a node), or the other way round:
    each trains on its share of the same batch of 32, and the run ends as one process would have
    trained it throughout."""
    job = ["--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0", "--rdzv-id=job-7", "--nnodes=1"]
    killed = str(tmp_path / "killed")
    if ranks == "2 then 1":
        torchrun(
            *job,
            "--nproc_per_node=2",
            KILLER,
            "train",
            *options,
            "--out",
            killed,
            env={"KILL_AT_STEP": "14", "KILL_RANK": "1"},
            expect=1,
        )  # no restarts left: it fails
        assert train(*options, "--out", killed, env={"TORCHELASTIC_RUN_ID": "job-7"}) == 0
    else:
        assert train(*options, "--out", killed, env={"TORCHELASTIC_RUN_ID": "job-7"}, kill_at_step=14) == -9
        continued = torchrun(*job, "--nproc_per_node=2", "-m", "wavenet_names", "train", *options, "--out", killed)
        assert "at step 12 (torchrun restarted it)" in continued.stdout
        assert (
            sum(line.startswith("best model ") for line in continued.stdout.splitlines()) == 1
        )  # rank 0 alone reports
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["run_id"] == "job-7"
    assert train(*options, "--out", str(tmp_path / "alone")) == 0
    assert_same_run(tmp_path / "killed", tmp_path / "alone", tolerance=1e-5)  # sums over ranks in another order


def test_a_start_by_hand_never_takes_over_another_run(options, tmp_path, capsys):
    """Another job's id, or none (a plain process, or torchrun's 'none'), is a fresh start: refused
    over a saved run, which is left byte for byte; so is every restart of a job whose first start was
    refused."""
    out = tmp_path / "run"
    assert (
        train(*options, "--steps", "4", "--eval-every", "4", "--out", str(out), env={"TORCHELASTIC_RUN_ID": "job-1"})
        == 0
    )
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for run_id in [None, "job-2", "none"]:
        os.environ.pop("TORCHELASTIC_RUN_ID", None)
        os.environ.update({} if run_id is None else {"TORCHELASTIC_RUN_ID": run_id})
        try:
            assert cli.main(["train", *options, "--out", str(out)]) == 2
        finally:
            os.environ.pop("TORCHELASTIC_RUN_ID", None)
        assert "already holds a checkpoint" in capsys.readouterr().err
    refused = torchrun(
        "--standalone",
        "--nproc_per_node=1",
        "--max-restarts=1",
        "-m",
        "wavenet_names",
        "train",
        *options,
        "--out",
        str(out),
        expect=1,
    )
    assert refused.stderr.count("already holds a checkpoint") == 2  # the first start and its restart
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_sigkill_at_random_moments_leaves_only_whole_files(small_data_file, tmp_path):
    """20 runs, each killed at a random moment while it saves every step (--checkpoint-every 1, an
    evaluation and model.pt every 3), each resuming the one before. Every checkpoint and metrics file
    left loads whole, every run resumes, and what killed writes left is hidden and removed by the next."""
    out = tmp_path / "run"
    args = [
        "--data",
        str(small_data_file),
        "--steps",
        "100000",
        "--eval-every",
        "3",
        "--checkpoint-every",
        "1",
        *TINY,
        "--out",
        str(out),
    ]
    rng, partials = random.Random(0), 0
    for attempt in range(20):
        since = time.time()
        child = forked(["train", *args, *(["--resume"] if attempt else [])])
        deadline = time.monotonic() + 60
        while not ((out / "last.pt").exists() and (out / "last.pt").stat().st_mtime > since):
            assert child.is_alive(), f"attempt {attempt} ended with {child.exitcode} before it saved"
            if time.monotonic() > deadline:
                joined(child, timeout=0)  # kills it, and fails the test
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.1))
        os.kill(child.pid, signal.SIGKILL)
        assert joined(child, timeout=30) == -signal.SIGKILL
        for path in out.iterdir():
            if path.name.startswith("."):
                partials += 1  # a write the kill cut short: never under the real name
            elif path.suffix == ".pt":
                load_checkpoint(path)["model"]
            elif path.name == "metrics.jsonl":
                assert all(json.loads(line)["step"] for line in path.read_text().splitlines())
    step = load_checkpoint(out / "last.pt")["step"]
    assert train(*args, "--resume", "--steps", str(step + 1)) == 0
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert load_checkpoint(out / "model.pt")["step"] <= step + 1
    print(f"{partials} partial writes left by 20 kills, {step} steps")


def test_checkpoint_every_may_change_when_a_run_resumes(options, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", *options, "--steps", "8", "--out", str(out)]) == 0
    assert cli.main(["train", "--out", str(out), "--resume", "--steps", "12", "--checkpoint-every", "3"]) == 0
    assert load_checkpoint(out / "last.pt")["train_config"]["checkpoint_every"] == 3
    capsys.readouterr()
    assert cli.main(["train", *options, "--checkpoint-every", "0", "--out", str(tmp_path / "bad")]) == 2
    assert capsys.readouterr().err.strip() == "wavenet-names train: error: --checkpoint-every must be at least 1, got 0"
    assert not (tmp_path / "bad").exists()
