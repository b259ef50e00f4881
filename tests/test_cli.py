"""End to end: the wavenet-names commands on a small data file, and every bad input we know of."""

import os
import signal
import time
from pathlib import Path

import pytest
import torch

from wavenet_names import __version__
from wavenet_names.checkpoint import load_checkpoint
from wavenet_names.cli import main
from wavenet_names.devices import resolve_device
from wavenet_names.options import OptionError
from wavenet_names.training import Trainer

from helpers import TINY, ended, first_line, one_error, start_cli, waited


def bad(tmp_path, content: bytes | None):
    path = tmp_path / "bad.txt"
    if content is not None:
        path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda t, d, c: ["train", "--data", bad(t, None)], "no such file"),
        (lambda t, d, c: ["train", "--data", bad(t, b"\n\n")], "empty"),
        (lambda t, d, c: ["train", "--data", bad(t, bytes(range(256)))], "binary"),
        (lambda t, d, c: ["train", "--data", bad(t, "zoë\n".encode("latin-1"))], "not UTF-8"),
        (lambda t, d, c: ["train", "--data", d, "--steps", "0"], "--steps must be at least 1"),
        (lambda t, d, c: ["train", "--data", d, "--batch-size", "-4"], "--batch-size must be at least 1"),
        (lambda t, d, c: ["train", "--data", d, "--n-layers", "0"], "n-layers must be at least 1"),
        (lambda t, d, c: ["train", "--data", d, "--n-hidden", "0"], "n-hidden must be at least 1"),
        (lambda t, d, c: ["train", "--data", d, "--steps", "ten"], "invalid int value"),
        (lambda t, d, c: ["train", "--data", d, "--lr", "-1"], "--lr must be a positive number"),
        (lambda t, d, c: ["train", "--data", d, "--weight-decay", "nan"], "--weight-decay must be a number"),
        (lambda t, d, c: ["train", "--data", d, "--patience", "0"], "--patience must be at least 1, got 0"),
        (lambda t, d, c: ["train", "--data", d, "--max-time", "nan"], "--max-time must be a positive number of"),
        (lambda t, d, c: ["sample", "--checkpoint", c, "--top-p", "0"], "--top-p must be in (0, 1], got 0.0"),
        (lambda t, d, c: ["train", "--data", d, "--model", "flat", "--gated"], "--gated is not an option of the flat"),
        (lambda t, d, c: ["train", "--data", d, "--preset", "best", "--model", "flat"], "--preset best is a conv"),
        (
            lambda t, d, c: ["train", "--out", str(Path(c).parent), "--resume", "--lr", "0.1", "--seed", "3"],
            "--lr and --seed cannot change when a run resumes",
        ),
        (lambda t, d, c: ["train", "--data", d, "--device", "cpu", "--precision", "tf32"], "tf32 is a CUDA GPU format"),
        (lambda t, d, c: ["train", "--out", str(t / "nothing"), "--resume"], "no such checkpoint"),
        (lambda t, d, c: ["train", "--out", str(Path(c).parent), "--resume", "--steps", "10"], "--steps 10 is behind"),
        (lambda t, d, c: ["train", "--data", d, "--out", bad(t, b"")], "is a file; --out names a directory"),
        (lambda t, d, c: ["sample", "--checkpoint", c, "--prefix", "Zo"], "'Z' is not in the vocabulary"),
        (lambda t, d, c: ["sample", "--checkpoint", c, "--temperature", "0"], "temperature must be greater"),
        (lambda t, d, c: ["sample", "--checkpoint", c, "--temperature", "-2"], "temperature must be greater"),
        (lambda t, d, c: ["sample", "--checkpoint", c, "-n", "0"], "-n must be at least 1"),
        (lambda t, d, c: ["sample", "--checkpoint", bad(t, b"just text\n")], "not a readable checkpoint"),
        (
            lambda t, d, c: ["evaluate", "--checkpoint", c, "--data", bad(t, b"ann\nZoe\n")],
            "bad.txt: character 'Z' is not in the vocabulary (abcdefghijklmnopqrstuvwxyz), in 'Zoe'",
        ),
        (lambda t, d, c: ["score", bad(t, None), "--checkpoint", c], "bad.txt: no such file"),
        (lambda t, d, c: ["score", bad(t, b"\n\n"), "--checkpoint", c], "bad.txt: empty, expected one item per line"),
        (
            lambda t, d, c: ["train", "--data", bad(t, b"ann\nbo\ncy\ndi\neve\n")],
            "val split is empty: the 80/10/10 split of 5 items leaves it none",
        ),
        (
            lambda t, d, c: ["evaluate", "--checkpoint", c, "--data", bad(t, b"ann\n")],
            "val split is empty: the 80/10/10 split of 1 item ",
        ),
    ],
    ids=[
        "missing",
        "empty",
        "binary",
        "latin-1",
        "steps",
        "batch",
        "layers",
        "hidden",
        "not-int",
        "lr",
        "weight-decay-nan",
        "patience-0",
        "max-time-nan",
        "top-p-0",
        "option-of-another-kind",
        "preset-of-another-kind",
        "resume-changes-fixed-options",
        "tf32-cpu",
        "no-resume",
        "resume-behind",
        "out-is-a-file",
        "prefix",
        "temp-0",
        "temp-neg",
        "n",
        "not-ckpt",
        "eval-vocab",
        "score-missing",
        "score-empty",
        "train-5-items",
        "eval-1-item",
    ],
)
def test_bad_input_is_one_line_and_harms_nothing(make_args, message, tmp_path, small_data_file, trained, capsys):
    before = {name: (trained / name).read_bytes() for name in ("model.pt", "last.pt", "metrics.json")}
    args = make_args(tmp_path, str(small_data_file), str(trained / "model.pt"))
    if args[0] == "train" and "--out" not in args:
        args += ["--out", str(trained), "--overwrite"]  # even so, nothing in the earlier run is touched
    with pytest.raises(SystemExit) if "invalid int" in message else _no_exit() as exit_info:
        status = main(args)
    status = exit_info.value.code if exit_info else status
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err, err
    for name, content in before.items():
        assert (trained / name).read_bytes() == content, f"{name} changed"


class _no_exit:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


@pytest.mark.slow  # starts processes
def test_python_m_and_ctrl_c_saves_and_exits_cleanly(tmp_path, small_data_file, capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0 and "train" in out and "sample" in out and "evaluate" in out
    out_dir = tmp_path / "run"
    proc = start_cli(
        "train",
        "--data",
        str(small_data_file),
        "--out",
        str(out_dir),
        "--steps",
        "1000000",
        "--eval-every",
        "10",
        *TINY,
    )
    deadline = time.monotonic() + 60
    while not (out_dir / "last.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGINT)
    out, err = ended(proc, 60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err
    assert load_checkpoint(out_dir / "last.pt")["step"] >= 10


@pytest.mark.slow  # starts processes
def test_ctrl_c_while_sampling_is_one_line(trained):
    proc = start_cli("sample", "--checkpoint", str(trained / "model.pt"), "-n", "1000000")
    assert first_line(proc)  # names come out while the rest are made (then wait on the full pipe)
    proc.send_signal(signal.SIGINT)
    _, err = ended(proc, 60)
    assert proc.returncode == 130, err
    assert err.strip() == "wavenet-names sample: interrupted"


@pytest.mark.slow  # starts processes
def test_sample_into_a_closed_pipe_stops_quietly(trained):
    """`wavenet-names sample -n 100000 | head -1`: no error once the reader has what it wanted."""
    proc = start_cli("sample", "--checkpoint", str(trained / "model.pt"), "-n", "100000")
    assert first_line(proc)
    proc.stdout.close()
    assert waited(proc) == 141  # 128 + SIGPIPE, as a shell reports for `yes | head -1`
    assert proc.stderr.read() == ""


@pytest.mark.parametrize(
    "error, said",
    [
        (
            torch.cuda.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.50 GiB. GPU 0 has a total capacity of "
                "139.80 GiB of which 1.02 GiB is free. Of the allocated memory ..."
            ),
            "2.50 GiB",
        ),
        (
            RuntimeError(
                "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                "tried to allocate 8000000000000 bytes. Error code 12 (Cannot allocate memory)"
            ),
            "7,450.6 GiB",
        ),
    ],
    ids=["cuda", "cpu"],
)
def test_out_of_memory_is_one_line(error, said, tmp_path, small_data_file, monkeypatch, capsys):
    def fails(self, seconds=0.0):
        raise error

    monkeypatch.setattr(Trainer, "train_step", fails)
    assert main(["train", "--data", str(small_data_file), "--out", str(tmp_path), *TINY]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"wavenet-names train: error: out of memory ({said} more); try a smaller --batch-size"
    )


def test_other_runtime_errors_keep_their_traceback(tmp_path, small_data_file, monkeypatch):
    def fails(self, seconds=0.0):
        raise RuntimeError("a bug")

    monkeypatch.setattr(Trainer, "train_step", fails)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["train", "--data", str(small_data_file), "--out", str(tmp_path), *TINY])


def test_an_out_that_cannot_be_made_is_one_line_without_errno(small_data_file, capsys):
    assert main(["train", "--data", str(small_data_file), "--out", "/proc/nope", "--steps", "2", *TINY]) == 2
    error = one_error(capsys)
    assert "/proc/nope" in error and "[Errno" not in error, error


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"wavenet-names {__version__}"


@pytest.mark.parametrize(
    "name, said",
    [
        ("cuda:1", "--device cuda:1: cuda is not available on this machine; use cpu"),
        ("mps", "--device mps: mps is not available on this machine; use cpu"),
        ("meta", "--device meta: a run takes cpu, cuda, mps, xpu, not meta"),
        ("gpu", "--device 'gpu' is not a device"),
    ],
)
def test_device_takes_any_torch_device_string(name, said, small_data_file, tmp_path, capsys, monkeypatch):
    """--device took only auto, cpu and cuda; cuda:1 and mps are torch's names for a second GPU and
    Apple's. On this machine (no GPU) each is refused in one line; as a machine with one GPU sees them:"""
    assert main(["train", "--data", str(small_data_file), "--out", str(tmp_path), "--device", name]) == 2
    assert said in one_error(capsys)
    assert main(["evaluate", "--checkpoint", "nowhere.pt", "--device", name]) == 2  # evaluate and score alike
    assert said in one_error(capsys)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(OptionError, match="cuda:1: this machine has 1 device of type cuda, numbered from 0"):
        resolve_device("cuda:1")
    assert resolve_device("cuda:0") == torch.device("cuda", 0) and resolve_device("cpu") == torch.device("cpu")
