"""The measurement scripts run where they will be run: a GPU lease is short, so the scripts that
spend it must work before they get there. On the CPU, at tiny sizes, every table they print (the
Python scripts in this process, as their command line runs them: see helpers.run_script)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import run_script

BENCH = Path(__file__).resolve().parents[1] / "bench"


def script(*args, env=None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [*args], capture_output=True, text=True, timeout=300, cwd=BENCH.parent, env={**os.environ, **(env or {})}
    )
    return result


def test_speedup_prints_every_table():
    result = run_script(
        BENCH / "speedup.py",
        "--blocks",
        "8",
        "--names",
        "16",
        "32",
        "--repeats",
        "1",
        "--large-batch",
        "64",
        "--precisions",
        "fp32",
        "--sample-names",
        "4",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines if line.startswith("block=")] == [
        ["block=8", "names=16"],
        ["block=8", "names=32"],
    ]
    assert any(
        re.match(r"default model, whole step, 64 names/batch .*fp32: [\d,]+ positions/s", line) for line in lines
    )
    assert any(re.match(r"  eager: \d+ operators a step, [\d,]+ bytes written and [\d,]+ read", line) for line in lines)
    assert any(re.match(r"sampling, block 256, 4 names: cached [\d,]+ names/s", line) for line in lines)


def test_profile_step_counts_operators_and_bytes():
    result = run_script(BENCH / "profile_step.py", "--count", "--names", "16")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = re.findall(r"^(.+): (\d+) ATen operators, ([\d,]+) bytes written", result.stdout, re.M)
    assert [label for label, *_ in rows] == ["per-position", "conv", "conv, in a bucket"]
    assert all(int(ops) > 0 for _, ops, _ in rows)


@pytest.mark.parametrize("bad", [["--names", "0"], ["--blocks", "6"], ["--device", "cuda", "--blocks", "8"]])
def test_speedup_refuses_bad_input_in_one_line(bad):
    result = run_script(BENCH / "speedup.py", *bad)
    if "cuda" in bad and "CUDA" not in result.stderr and result.returncode == 0:
        pytest.skip("this machine has a GPU")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.slow  # starts processes
def test_gpu_script_parses_and_stops_without_a_gpu(tmp_path):
    assert script("bash", "-n", "bench/gpu.sh").returncode == 0
    result = script("bash", "bench/gpu.sh", env={"OUT": str(tmp_path), "PYTHON": sys.executable})
    if result.returncode != 2:
        pytest.skip("this machine has a GPU: the script would measure it")
    assert "no CUDA GPU" in result.stderr and (tmp_path / "gpu.log").exists()


def test_versions_compares_this_checkout_with_a_commit():
    result = run_script(BENCH / "versions.py", "HEAD", "--blocks", "8", "--names", "16", "--repeats", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"training step, block 8, 16 names: [\d,]+ / [\d,]+ positions/s = [\d.]+x", result.stdout)
    assert re.search(r"cached generation, 64 names: [\d,]+ / [\d,]+ names/s = [\d.]+x", result.stdout)
    for bad, problem in [(["HEAD", "--blocks", "6"], "powers of two"), (["no-such-commit"], "no package at")]:
        refused = run_script(BENCH / "versions.py", *bad)
        assert refused.returncode == 2 and problem in refused.stderr, refused.stderr


def test_roofline_counts_the_flops_twice_and_breaks_the_step_down(tmp_path):
    chart = tmp_path / "roofline.png"
    result = run_script(BENCH / "roofline.py", "--preset", "default", "--steps", "2", "--chart", str(chart))
    assert result.returncode == 0, result.stderr
    assert any(line.startswith("| default | 128 | 0.30") for line in result.stdout.splitlines())  # MFLOP/position
    shares = next(line for line in result.stdout.splitlines() if line.startswith("| default |") and "%" in line)
    assert sum(int(cell.strip().rstrip("%")) for cell in shares.split("|")[2:-1]) in range(98, 103)  # (rounding)
    counted, by_hand = map(
        float, re.findall(r"default: (\d\.\d+) MFLOP by FlopCounterMode, (\d\.\d+) by hand", result.stdout)[0]
    )
    assert abs(counted - by_hand) / counted < 0.02
    assert chart.stat().st_size > 0


@pytest.mark.parametrize("fast_tanh", [False, True])
def test_the_hand_written_layer_candidate_computes_the_layers_own_gradients(fast_tanh):
    """roofline.py --candidates times the layer with its backward written out by hand: a figure worth
    reading only if it computes what the layer does. In float64, against autograd's, to 1e-9; a
    dilation that reaches into the names and one that reaches past them."""
    import runpy

    import torch

    from wavenet_names.packing import ExactLayout
    from wavenet_names.wavenet import DilatedLayer

    roofline = runpy.run_path(str(BENCH / "roofline.py"))
    torch.manual_seed(0)
    idx = torch.tensor([[0] * 4 + [3, 5, 2, 0, 0], [0] * 4 + [1, 2, 3, 4, 0]])
    targets = torch.tensor([[3, 5, 2, 0, -1, -1], [1, 2, 3, 4, 0, -1]])
    for dilation in (2, 8):
        layout = ExactLayout.of(idx, targets, 4, [2] if dilation == 2 else [], labelled=False)
        layer = DilatedLayer(8, 6, dilation).double()
        h = torch.randn(len(layout.tokens), 8, dtype=torch.float64, requires_grad=True)
        upstream = torch.randn(len(layout.tokens), 6, dtype=torch.float64)
        results = []
        for hand in (False, True):
            h.grad = None
            layer.zero_grad()
            if hand:
                weights = layer.conv.weight, layer.norm.weight, layer.norm.bias
                far = layout.far.get(dilation)
                out = roofline["HandWrittenLayer"].apply(h, *weights, far, dilation, layer.norm, fast_tanh)
            else:
                out, _ = layer.forward_packed(h, layout)
            (out * upstream).sum().backward()
            results.append([out.detach(), h.grad, *(p.grad for p in layer.parameters())])
        for own, by_hand in zip(*results, strict=True):
            torch.testing.assert_close(by_hand, own, rtol=0, atol=1e-9)


def test_the_floor_trains_its_one_batch_with_fewer_operators_than_a_step():
    """roofline.py's floor (FixedBatch) is the default step with the candidates kept and nothing drawn:
    it must still train (its one batch's loss falls), and run fewer operators than the step."""
    import runpy

    from wavenet_names.data import NAMES_TXT
    from wavenet_names.splits import Splits

    roofline = runpy.run_path(str(BENCH / "roofline.py"))
    splits = Splits.read(NAMES_TXT)
    floor = roofline["FixedBatch"](roofline["trainer"]("default", splits))
    losses = [float(floor.train_step()[0]) for _ in range(30)]
    assert losses[-1] < 0.9 * losses[0]
    step = roofline["trainer"]("default", splits)
    step.train_step()
    assert roofline["ops_of"](floor.train_step) < roofline["ops_of"](step.train_step)
