"""End to end: the wavenet-names commands on a small data file, and every bad input we know of."""

import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from wavenet_names.checkpoint import FORMAT, load_checkpoint, load_model, save_checkpoint
from wavenet_names.cli import _print_names, main
from wavenet_names.data import NameBatches, read_words
from wavenet_names.sampling import SampleConfig, Seen, generate
from wavenet_names.scoring import score
from wavenet_names.training import Splits, Trainer, evaluate

from helpers import first_line, start_cli

TINY = ["--n-embd", "8", "--n-hidden", "16", "--n-layers", "2", "--batch-size", "16", "--samples", "3"]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory, all_words):
    path = tmp_path_factory.mktemp("data") / "names.txt"
    path.write_text("\n".join(all_words[:300]) + "\n")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_file):
    """A run of 20 steps; tests must not modify it."""
    out = tmp_path_factory.mktemp("run")
    assert (
        main(["train", "--data", str(data_file), "--out", str(out), "--steps", "20", "--eval-every", "5", *TINY]) == 0
    )
    return out


def run_cli(*args, env=None, stdin: str | None = None):
    """The installed entry point as a user runs it: returns (exit status, stdout, stderr)."""
    result = subprocess.run(
        [sys.executable, "-m", "wavenet_names", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        input=stdin,
    )
    return result.returncode, result.stdout, result.stderr


def test_train_writes_everything(trained):
    for name in ("model.pt", "last.pt", "loss.png", "metrics.jsonl", "metrics.json"):
        assert (trained / name).stat().st_size > 0, name
    metrics = json.loads((trained / "metrics.json").read_text())
    assert {"train_loss", "val_loss", "steps", "seconds"} <= metrics.keys()
    assert metrics["steps"] == 20
    assert metrics["epochs"] == pytest.approx(20 * 16 / 240)  # 20 batches of 16 names, 240 names in train
    assert len((trained / "metrics.jsonl").read_text().splitlines()) == 4
    assert (trained / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_logged_to_a_file_writes_a_line_per_evaluation_and_no_progress_bar(data_file, tmp_path, capsys):
    """Output that is not a terminal (a log file, CI, a pipe, as pytest's capture is) gets the
    evaluation lines, not a bar's carriage-return updates, one per step."""
    args = ["train", "--data", str(data_file), "--out", str(tmp_path), "--steps", "40", "--eval-every", "10", *TINY]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "\r" not in err and "it/s" not in err and "step/s" not in err, err
    steps = [line.split()[1] for line in out.splitlines() if line.startswith("step ")]
    assert steps == ["10", "20", "30", "40"]


def test_sample_is_reproducible_and_marks_seen_names(trained, capsys):
    assert main(["sample", "--checkpoint", str(trained / "model.pt"), "-n", "12", "--seed", "3"]) == 0
    first = capsys.readouterr().out
    assert main(["sample", "--checkpoint", str(trained / "model.pt"), "-n", "12", "--seed", "3"]) == 0
    assert capsys.readouterr().out == first
    assert len(first.splitlines()) == 12
    assert (
        main(["sample", "--checkpoint", str(trained / "model.pt"), "--prefix", "an", "-n", "3", "--top-k", "500"]) == 0
    )
    assert all(line.startswith("an") for line in capsys.readouterr().out.splitlines())


def test_seen_names_are_marked(vocab, capsys):
    from wavenet_names import ConvWaveNet

    model = ConvWaveNet(len(vocab), 8, 16, 2).eval()
    config = SampleConfig(n=6, seed=1)
    names = generate(model, vocab, config)
    _print_names(model, vocab, Seen(frozenset({names[0], names[3]}), frozenset({names[1]})), config)
    lines = capsys.readouterr().out.splitlines()
    assert [line.removeprefix(name or "(empty)") for line, name in zip(lines, names, strict=True)] == [
        " *",
        " +",
        "",
        " *",
        "",
        "",
    ]


def test_evaluate_prints_split_and_loss(trained, data_file, capsys):
    assert main(["evaluate", "--checkpoint", str(trained / "model.pt")]) == 0
    split, loss = capsys.readouterr().out.split()
    assert split == "val"
    assert float(loss) == pytest.approx(json.loads((trained / "metrics.json").read_text())["val_loss"], abs=1e-4)
    losses = {}
    for split in ("train", "val", "test", "all"):
        assert main(["evaluate", "--checkpoint", str(trained / "model.pt"), "--split", split]) == 0
        name, loss = capsys.readouterr().out.split()
        assert name == split
        losses[split] = float(loss)
    splits = Splits.from_words(read_words(data_file))
    examples = {split: sum(len(w) + 1 for w in getattr(splits, split)) for split in ("train", "val", "test")}
    mean = sum(losses[split] * n for split, n in examples.items()) / sum(examples.values())  # per character
    assert losses["all"] == pytest.approx(mean, abs=1e-4)  # each printed to 4 decimals


def test_items_with_dots_train_sample_and_evaluate(tmp_path, capsys):
    """Web addresses: '.' is a character of the data, and a line break the start/end token."""
    data = tmp_path / "sites.txt"
    data.write_text("".join(f"{w}.{tld}\n" for w in ("ann", "bob", "cyd", "dot", "eve") for tld in ("com", "org")))
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), "--steps", "10", "--eval-every", "5", *TINY]) == 0
    assert load_checkpoint(out / "model.pt")["vocab"][0] == "\n"
    assert main(["sample", "--checkpoint", str(out / "model.pt"), "-n", "50", "--prefix", "a.", "--seed", "0"]) == 0
    names = capsys.readouterr().out.splitlines()[-50:]
    assert len(names) == 50 and all(name.startswith("a.") and "\n" not in name for name in names)
    assert main(["evaluate", "--checkpoint", str(out / "model.pt"), "--split", "all"]) == 0
    assert float(capsys.readouterr().out.split()[1]) > 0


def test_samples_are_not_cut_shorter_than_the_training_items(tmp_path, capsys):
    """Items of 150 characters (product titles): by default a sample may run as long as the longest
    of them, not the 64 characters that suit names; --cut-at still caps it. A model one step from its
    random start rarely ends an item among 151 tokens, so most samples run long."""
    data = tmp_path / "titles.txt"
    data.write_text("".join("".join(chr(0x100 + (i + j) % 150) for j in range(150)) + "\n" for i in range(10)))
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), "--steps", "1", *TINY[:-2], "--samples", "0"]) == 0
    capsys.readouterr()
    lengths = {}
    for cut_at in (None, 64):
        extra = ["--cut-at", str(cut_at)] if cut_at else []
        assert main(["sample", "--checkpoint", str(out / "model.pt"), "-n", "20", "--seed", "0", *extra]) == 0
        lengths[cut_at] = [len(line.split("  (cut at")[0]) for line in capsys.readouterr().out.splitlines()]
    assert 64 < max(lengths[None]) <= 150
    assert max(lengths[64]) == 64


def test_score_prints_each_items_loss_in_order_from_a_file_or_standard_input(trained, tmp_path, capsys, monkeypatch):
    checkpoint = str(trained / "model.pt")
    items = ["emma", "zzxqj", "olivia"]
    path = tmp_path / "mine.txt"
    path.write_text("\n".join(items) + "\n\n")  # a blank line is no item
    assert main(["score", str(path), "--checkpoint", checkpoint]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[1] for line in lines] == items
    model, vocab, _ = load_model(checkpoint)
    expected = [f"{loss:.4f}\t{item}" for item, loss in zip(items, score(model, vocab, items), strict=True)]
    assert lines == expected
    for stdin in ("emma\nzzxqj\nolivia\n", "emma\nJoe\n"):  # piped in: not a terminal
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode())))
        status = main(["score", "--checkpoint", checkpoint])
        out, err = capsys.readouterr()
        if "Joe" not in stdin:
            assert (status, out.splitlines(), err) == (0, expected, "")
    assert status == 2 and out == ""
    assert err.strip().splitlines() == [
        "wavenet-names score: error: standard input: items with a character the model does not know: 1 of 2, "
        "the first 'Joe' ('J'); pass --lowercase or --skip-unknown"
    ]
    # `Anna` with a capital A aborted a whole score: lowercase it, or skip it and say so
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"Emma\nzzxqj\nOlivia\n")))
    assert main(["score", "--checkpoint", checkpoint, "--lowercase"]) == 0
    assert capsys.readouterr() == ("\n".join(expected) + "\n", "")
    path.write_text("emma\nJoe\nolivia\nzoë\n")
    assert main(["score", str(path), "--checkpoint", checkpoint, "--skip-unknown"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [expected[0], expected[2]]
    assert err == "skipped 2 of 4 items: a character the model does not know\n"


@pytest.mark.slow  # starts processes
def test_score_typed_at_a_terminal_says_how_to_end(trained):
    """Without a file and with a terminal as standard input, score waits for lines: it says so, and
    Ctrl-D (end of input) scores what was typed."""
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "wavenet_names", "score", "--checkpoint", str(trained / "model.pt")],
        stdin=follower,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(follower)
    try:
        os.write(leader, b"emma\n\x04")  # a line, then Ctrl-D at the start of the next
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        os.close(leader)
    assert proc.returncode == 0, err
    assert "end with Ctrl-D" in err
    assert out.split("\t")[1] == "emma\n"


def test_the_library_loads_what_train_wrote(trained, capsys):
    """The README's library example: load_model, then generate, as `sample` does."""
    from wavenet_names import SampleConfig, generate, load_model

    model, vocab, checkpoint = load_model(trained / "model.pt")
    assert not model.training and checkpoint["step"] == json.loads((trained / "metrics.json").read_text())["best_step"]
    names = generate(model, vocab, SampleConfig(n=5, seed=3))
    assert main(["sample", "--checkpoint", str(trained / "model.pt"), "-n", "5", "--seed", "3"]) == 0
    printed = [line.removesuffix(" *").split("  (cut at")[0] for line in capsys.readouterr().out.splitlines()]
    assert printed == [name or "(empty)" for name in names]  # (20 steps of training: some end at once)


def test_evaluate_all_of_a_held_out_file(trained, data_file, tmp_path, capsys):
    held_out = tmp_path / "held_out.txt"
    words = read_words(data_file)[-10:]
    held_out.write_text("\n".join(words) + "\n")
    assert main(["evaluate", "--checkpoint", str(trained / "model.pt"), "--data", str(held_out), "--split", "all"]) == 0
    model, _, _ = load_model(trained / "model.pt")
    expected = evaluate(model, NameBatches(words, Splits.from_words(read_words(data_file)).vocab, model.block_size))
    assert capsys.readouterr().out == f"all {expected:.4f}\n"  # every one of the 10, not the lecture's split of them


def test_resume_continues_exactly(tmp_path, data_file):
    common = ["--data", str(data_file), "--schedule", "constant", "--eval-every", "5", *TINY]
    assert main(["train", "--out", str(tmp_path / "a"), "--steps", "20", *common]) == 0
    assert main(["train", "--out", str(tmp_path / "b"), "--steps", "10", *common]) == 0
    resume = ["train", "--out", str(tmp_path / "b"), "--steps", "20", "--resume", "--samples", "0", "--device", "cpu"]
    assert main(resume) == 0  # --device, --steps: what a resumed run may change
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert b["step"] == 20
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_the_lectures_models_train(tmp_path, data_file, capsys):
    for model in ("hierarchical", "flat"):
        args = ["train", "--model", model, "--data", str(data_file), "--out", str(tmp_path / model), "--steps", "30"]
        assert main([*args, "--n-hidden", "16", "--samples", "2"]) == 0
        assert load_checkpoint(tmp_path / model / "model.pt")["train_config"]["optimizer"] == "sgd"
        windows = sum(len(w) + 1 for w in Splits.from_words(read_words(data_file)).train)  # an epoch: every window
        epochs = 30 * 32 / windows  # 30 batches of the lecture's 32 windows
        assert f"30 steps, {epochs:.2g} epochs, " in capsys.readouterr().out
        metrics = json.loads((tmp_path / model / "metrics.json").read_text())
        assert metrics["epochs"] == pytest.approx(epochs)


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
        (lambda t, d, c: ["train", "--data", d, "--model", "flat", "--gated"], "--gated is an option of the conv"),
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
def test_bad_input_is_one_line_and_harms_nothing(make_args, message, tmp_path, data_file, trained, capsys):
    before = {name: (trained / name).read_bytes() for name in ("model.pt", "last.pt", "metrics.json")}
    args = make_args(tmp_path, str(data_file), str(trained / "model.pt"))
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


def test_training_into_an_earlier_run_needs_resume_or_overwrite(trained, data_file, capsys):
    before = (trained / "model.pt").read_bytes()
    assert main(["train", "--data", str(data_file), "--out", str(trained), "--steps", "2"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (trained / "model.pt").read_bytes() == before


@pytest.mark.slow  # starts a process
def test_compile_without_a_compiler_is_one_line_and_harms_nothing(trained, data_file, tmp_path):
    """The real failure: inductor finds no C++ compiler (CXX points at /bin/false, and an empty cache
    holds no kernels compiled earlier). Over an earlier run with --overwrite, which is left whole. In a
    process of its own: inductor leaves threads behind, and a process forked after them can deadlock
    (test_restarts.py forks its runs)."""
    before = {name: (trained / name).read_bytes() for name in ("model.pt", "last.pt", "metrics.json", "metrics.jsonl")}
    env = {**os.environ, "CXX": "/bin/false", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache")}
    args = ["train", "--data", str(data_file), "--out", str(trained), "--overwrite", "--compile", "--steps", "5", *TINY]
    status, _, err = run_cli(*args, env=env)
    errors = [line for line in err.splitlines() if "error" in line or "Traceback" in line]
    assert status == 2, err
    assert len(errors) == 1 and "--compile failed: torch.compile raised InvalidCxxCompiler" in errors[0], err
    for name, content in before.items():
        assert (trained / name).read_bytes() == content, f"{name} changed"


def test_truncated_and_foreign_checkpoints(trained, tmp_path, capsys):
    content = (trained / "model.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(content[: len(content) // 2])
    assert main(["sample", "--checkpoint", str(truncated)]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err
    future = tmp_path / "future.pt"
    checkpoint = load_checkpoint(trained / "model.pt")
    checkpoint.pop("format")
    torch.save({**checkpoint, "format": "wavenet_names.checkpoint/99"}, future)
    assert main(["evaluate", "--checkpoint", str(future)]) == 2
    assert f"this version reads {FORMAT!r}" in capsys.readouterr().err
    pickled = tmp_path / "code.pt"
    torch.save({"format": FORMAT, "model": Path("x")}, pickled)  # an arbitrary object: refused unpickled
    assert main(["sample", "--checkpoint", str(pickled)]) == 2
    assert "not a wavenet_names checkpoint (it holds objects other than tensors" in capsys.readouterr().err


def test_a_failed_write_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    save_checkpoint({"step": 1}, path)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C in the middle of torch.save

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"step": 2}, path)
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left behind


@pytest.mark.slow  # starts processes
def test_python_m_and_ctrl_c_saves_and_exits_cleanly(tmp_path, data_file, capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0 and "train" in out and "sample" in out and "evaluate" in out
    out_dir = tmp_path / "run"
    proc = start_cli(
        "train", "--data", str(data_file), "--out", str(out_dir), "--steps", "1000000", "--eval-every", "10", *TINY
    )
    deadline = time.monotonic() + 60
    while not (out_dir / "last.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err
    assert load_checkpoint(out_dir / "last.pt")["step"] >= 10


def test_ctrl_c_during_the_final_figures_says_resume_finishes_them(tmp_path, data_file, monkeypatch, capsys):
    """After the last step, train computes the loss over the whole training split (a minute on a
    large list). Ctrl-C there loses no training: it says so, and --resume writes the figures."""
    import wavenet_names.runs as runs

    def interrupted(trainer, out):
        raise KeyboardInterrupt

    out = tmp_path / "run"
    args = ["train", "--data", str(data_file), "--out", str(out), "--steps", "10", "--eval-every", "5", *TINY]
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


@pytest.mark.slow  # starts processes
def test_ctrl_c_while_sampling_is_one_line(trained):
    proc = start_cli("sample", "--checkpoint", str(trained / "model.pt"), "-n", "1000000")
    assert first_line(proc)  # names come out while the rest are made (then wait on the full pipe)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip() == "wavenet-names sample: interrupted"


@pytest.mark.slow  # starts processes
def test_sample_into_a_closed_pipe_stops_quietly(trained):
    """`wavenet-names sample -n 100000 | head -1`: no error once the reader has what it wanted."""
    proc = start_cli("sample", "--checkpoint", str(trained / "model.pt"), "-n", "100000")
    assert first_line(proc)
    proc.stdout.close()
    assert proc.wait(timeout=60) == 141  # 128 + SIGPIPE, as a shell reports for `yes | head -1`
    assert proc.stderr.read() == ""


def test_a_diverging_run_stops_with_one_line_and_keeps_its_best_model(tmp_path, data_file, monkeypatch, capsys):
    """The weights turn nan at step 7, as a learning rate far too high makes them (on this tiny model
    --lr 1e6 does, but when depends on the machine's arithmetic): the evaluation at step 10 stops."""
    step = Trainer.train_step

    def diverging(self):
        result = step(self)
        if self.step == 7:
            with torch.no_grad():
                for p in self.model.parameters():
                    p.fill_(math.nan)
        return result

    monkeypatch.setattr(Trainer, "train_step", diverging)
    out = tmp_path / "run"
    args = ["train", "--data", str(data_file), "--out", str(out), "--steps", "20", "--eval-every", "5", *TINY]
    assert main(args) == 2
    err = capsys.readouterr().err.splitlines()[-1]  # after the progress bar
    assert err == (
        "wavenet-names train: error: training diverged: the validation loss is nan at step 10; try a "
        "smaller --lr (model.pt keeps the best model, from step 5)"
    )
    for name in ("model.pt", "last.pt"):  # as the last finite evaluation left them
        assert load_checkpoint(out / name)["step"] == 5
    assert not (out / "metrics.json").exists()


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
def test_out_of_memory_is_one_line(error, said, tmp_path, data_file, monkeypatch, capsys):
    def fails(self):
        raise error

    monkeypatch.setattr(Trainer, "train_step", fails)
    assert main(["train", "--data", str(data_file), "--out", str(tmp_path), *TINY]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"wavenet-names train: error: out of memory ({said} more); try a smaller --batch-size"
    )


def test_other_runtime_errors_keep_their_traceback(tmp_path, data_file, monkeypatch):
    def fails(self):
        raise RuntimeError("a bug")

    monkeypatch.setattr(Trainer, "train_step", fails)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["train", "--data", str(data_file), "--out", str(tmp_path), *TINY])


def test_preset_best_reports_the_test_loss_once(tmp_path, data_file, capsys):
    out = tmp_path / "best"
    args = ["train", "--preset", "best", "--data", str(data_file), "--out", str(out), "--steps", "4", *TINY]
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
