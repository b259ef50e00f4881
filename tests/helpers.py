"""Shared test helpers: tiny options, the same names as the lecture's windows and as conv batches, the
program run in a forked process, under torchrun, or in a process of its own, and a script run in
this one."""

import contextlib
import io
import json
import multiprocessing
import os
import runpy
import select
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from wavenet_names import (
    cli,
    encode_names,
    fitting,
    pad_batch,
    windows,
)
from wavenet_names.configuration import TrainConfig
from wavenet_names.models import KINDS, ModelConfig, build_model
from wavenet_names.options import flag, option_fields
from wavenet_names.splits import Facts
from wavenet_names.training import Trainer

from kill_at_step import kill_before_step

# the smallest model that trains in a blink: tests of what `train` does, not of what it learns
TINY = ["--n-embd", "8", "--n-hidden", "16", "--n-layers", "2", "--batch-size", "16", "--samples", "0"]


def tiny(kind: str, flags: list[str] = TINY) -> list[str]:
    """`flags`, pairs of a flag and its value, without the model options that `kind` does not read
    (the GRU has no --n-layers)."""
    others = {flag(f) for k in KINDS.values() if k.name != kind for f in option_fields(k.options)}
    own = {flag(f) for f in option_fields(KINDS[kind].options)}
    pairs = zip(flags[::2], flags[1::2], strict=True)
    return [item for name, value in pairs if name not in others - own for item in (name, value)]


def both_views(words, vocab, block_size):
    """(X, Y) windows for the per-position models and (idx, targets) for ConvWaveNet, same examples in
    the same order: targets[targets != -1] == Y."""
    X, Y = windows(words, vocab, block_size)
    idx, targets = pad_batch(*encode_names(words, vocab), block_size)
    assert torch.equal(targets[targets != -1], Y)
    return X, Y, idx, targets


def sgd_steps(model, inputs, targets, steps=5, lr=0.1, labels=None):
    """A few training-mode SGD steps, so that weights and BatchNorm running statistics move."""
    model.train()
    for _ in range(steps):
        model.zero_grad()
        _, loss = model(inputs, targets, labels=labels)
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= lr * p.grad
    return model


def summed_loss(logits, targets):
    """The sum (not the mean) of the per-position losses, so gradients compare across batch layouts."""
    valid = targets != -1
    return F.cross_entropy(logits[valid], targets[valid], reduction="sum")


LABEL_SIZES = (3, 5)  # a conditional model's two label columns, of 2 and 4 values and unknown


def random_labels(n: int, sizes: tuple[int, ...] = LABEL_SIZES) -> torch.Tensor:
    """n rows of random labels (n, len(sizes)), unknown (0) among them."""
    return torch.stack([torch.randint(0, size, (n,)) for size in sizes], 1)


def cycled_labels(n: int, sizes: tuple[int, ...] = LABEL_SIZES) -> torch.Tensor:
    """n rows of labels (n, len(sizes)): every value of each column in turn, unknown (0) included."""
    return torch.stack([torch.arange(n) % size for size in sizes], 1)


READS = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero", "equal", "masked_select"}
INDEXING = {"__getitem__", "__setitem__"}  # a read when an index is a bool mask: its nonzero decides the shape


class HostReads(TorchFunctionMode):
    """Records the torch calls that hand a device value to the host, as the model's Python code makes
    them (what happens inside one torch operator, or in backward, is not seen: none of those read)."""

    def __init__(self):
        super().__init__()
        self.reads = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        index = args[1] if len(args) > 1 and name in INDEXING else ()
        masks = any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool
            for i in (index if isinstance(index, tuple) else (index,))
        )
        if name in READS or masks:
            self.reads.append(name)
        return func(*args, **(kwargs or {}))


# --- running the program without starting a new interpreter -------------------------------------------

FORK = multiprocessing.get_context("fork")


def _forked_main(argv: list[str], env: dict, kill_at_step: int | None, log: str | None) -> None:
    """In a forked copy of this process (torch already imported: a fraction of a second to start):
    `wavenet-names ARGV`, its output into `log` (or nowhere), killed by SIGKILL (which no program can
    catch or clean up after) just before training step kill_at_step."""
    torch.set_num_threads(1)  # no thread pool inherited half-made from the parent
    os.environ.update(env)
    sys.stdout = sys.stderr = open(log or os.devnull, "w")  # noqa: SIM115
    if kill_at_step is not None:
        kill_before_step(kill_at_step)
    code = cli.main(argv)
    sys.stdout.flush()
    os._exit(code)


def forked(argv: list[str], env: dict | None = None, kill_at_step: int | None = None, log: Path | None = None):
    """`wavenet-names ARGV` in a forked process, started; joined() gives its exitcode (-9: killed)."""
    child = FORK.Process(target=_forked_main, args=(argv, env or {}, kill_at_step, log and str(log)))
    child.start()
    return child


def joined(child, timeout: float = 120) -> int:
    """A forked child's exit code once it ends; killed, and the test failed, if it runs past `timeout` s."""
    child.join(timeout)
    if child.is_alive():
        child.kill()
        child.join(10)
        pytest.fail(f"a forked wavenet-names was still running after {timeout} s")
    return child.exitcode


def run_cli(*args, env=None, stdin: str | None = None) -> tuple[int, str, str]:
    """The entry point as a user runs it, in a process of its own: (exit status, stdout, stderr)."""
    result = subprocess.run(
        [sys.executable, "-m", "wavenet_names", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        input=stdin,
    )
    return result.returncode, result.stdout, result.stderr


TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def torchrun(*args, env: dict | None = None, expect: int = 0) -> subprocess.CompletedProcess:
    """`torchrun ARGS` (its options, then what it runs), as a user starts it; fails the test unless it
    exits with `expect`, showing the end of what it said: a worker that crashes (SIGABRT, SIGSEGV)
    prints the Python stack of each of its threads there too."""
    env = {**os.environ, "PYTHONFAULTHANDLER": "1", **(env or {})}
    result = subprocess.run([*TORCHRUN, *args], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == expect, result.stderr[-3000:]
    return result


def start_cli(*args) -> subprocess.Popen:
    """The entry point running in the background, its stdout and stderr piped to the test."""
    return subprocess.Popen(
        [sys.executable, "-m", "wavenet_names", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def ended(proc: subprocess.Popen, timeout: float = 60) -> tuple[str, str]:
    """A started process's output once it ends; killed, and the test failed, if it runs past
    `timeout` s: no process outlives its test."""
    return _within(proc, timeout, proc.communicate)


def waited(proc: subprocess.Popen, timeout: float = 60) -> int:
    """ended(), for a process whose output the test reads itself: its exit status."""
    return _within(proc, timeout, proc.wait)


def _within(proc: subprocess.Popen, timeout: float, finish):
    try:
        return finish(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"{' '.join(map(str, proc.args))[:200]} was still running after {timeout} s")


def first_line(proc: subprocess.Popen, timeout: float = 60) -> str:
    """proc's first line of output, failing (not hanging) if it prints nothing within `timeout` s."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        proc.kill()
        pytest.fail(f"no output within {timeout} s")
    return proc.stdout.readline()


class Finished(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def run_script(path: Path, *args: str) -> Finished:
    """`python PATH ARGS` in this process, as its command line would run it (sys.argv, its folder first
    on sys.path, SystemExit as the exit status), its output captured: a script's behaviour without a
    new interpreter and a new import of torch."""
    out, err = io.StringIO(), io.StringIO()
    argv, path_before = sys.argv, list(sys.path)
    sys.argv, sys.path[:0] = [str(path), *args], [str(path.parent)]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(str(path), run_name="__main__")
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                if isinstance(e.code, str):
                    print(e.code, file=sys.stderr)
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        sys.argv, sys.path[:] = argv, path_before
    return Finished(code, out.getvalue(), err.getvalue())


def small(kind: str, vocab_size: int, positions: int):
    """A small model of `kind`, at its (seeded) random initialisation, reading names of up to
    positions - 1 characters. The transformer has dropout, which eval mode must switch off
    everywhere for the checks below to hold."""
    sizes = (
        dict(n_embd=16, n_layers=2, n_head=2, dropout=0.3) if kind == "transformer" else dict(n_embd=16, n_hidden=24)
    )
    torch.manual_seed(0)
    return build_model(ModelConfig.of(kind, Facts(vocab_size, (), positions - 1), **sizes))


def batch(words, vocab, block_size=1):
    return pad_batch(*encode_names(words, vocab), block_size)  # idx (B, n): '.', the name; targets (B, n)


def mixture_loss(members, inputs, targets) -> float:
    """-mean log(mean over members of p(target)), from each member's own logits, by hand."""
    with torch.no_grad():
        probs = torch.stack([m.eval()(inputs, targets)[0].softmax(-1) for m in members]).mean(0)  # (..., vocab)
    valid = targets != -1
    return -probs[valid].gather(-1, targets[valid][:, None]).log().mean().item()


def reads(kind: str) -> set[str]:
    """The options that a kind of model reads."""
    return {f.name for f in option_fields(KINDS[kind].options)}


def small_run(splits, kind="conv", **overrides):
    sizes = {"n_embd": 8, "n_hidden": 16, "n_layers": 2, **({"block_size": 4} if kind == "flat" else {})}
    model_config = ModelConfig.of(kind, splits.facts, **{k: v for k, v in sizes.items() if k in reads(kind)})
    config = TrainConfig(**{"steps": 30, "batch_size": 16, "eval_every": 7, **overrides})
    return Trainer(model_config, config, splits)


def step_clock(monkeypatch, seconds_a_step: float):
    """A training clock (fitting's) that moves `seconds_a_step` a step and stands still otherwise:
    returns what makes a Trainer's steps move it."""
    now = [0.0]
    monkeypatch.setattr(fitting.time, "perf_counter", lambda: now[0])

    def timed(trainer):
        step = trainer.train_step
        trainer.train_step = lambda seconds: (now.__setitem__(0, now[0] + seconds_a_step), step(seconds))[1]
        return trainer

    return timed


def one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


class Served(NamedTuple):
    """A `wavenet-names serve` process: its address (http://host:port/), host, port, process and log."""

    address: str
    host: str
    port: int
    process: subprocess.Popen
    log: Path


@contextlib.contextmanager
def served(log: Path, *flags: str, checkpoint: str = "names-by-decade"):
    """`wavenet-names serve --port 0 FLAGS` in a process of its own, ready (/readyz said 200), its
    access log and errors in `log`; stopped, and waited for, after the test."""
    command = [sys.executable, "-m", "wavenet_names", "serve", "--checkpoint", checkpoint, "--port", "0", *flags]
    with open(log, "w") as errors:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True)
    try:
        line = first_line(process)
        assert "serving" in line, log.read_text()
        address = line.split(" on ")[1].split()[0]
        host, port = address.split("//")[1].rstrip("/").rsplit(":", 1)
        for _ in range(600):
            if http_get(address + "readyz")[0] == 200:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the server did not become ready within 30 s")
        yield Served(address, host, int(port), process, log)
    finally:
        if process.poll() is None:
            process.terminate()
        waited(process, 30)


def post(address: str, path: str, body: dict, timeout: float = 60) -> tuple[int, dict]:
    """A JSON request to a server at `address` (http://host:port/): its status and JSON answer."""
    request = urllib.request.Request(
        address + path.lstrip("/"), json.dumps(body).encode(), {"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
