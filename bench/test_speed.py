"""pytest-benchmark: `pytest bench/` (add --benchmark-json=FILE for bench/report.py).

Every benchmark records positions (or names) per call in extra_info, so the report can turn medians
into throughput and line the two models up side by side."""

import pytest
import torch

import workloads

N_LAYERS = [3, 4, 5, 6, 7, 8]  # block 8 to 256
ROUNDS = dict(rounds=5, warmup_rounds=1, iterations=1)


def record(benchmark, device, **info):
    benchmark.extra_info.update(device=device.type, gpu=_gpu_name(device), **info)


def _gpu_name(device):
    return torch.cuda.get_device_name(device) if device.type == "cuda" else None


@pytest.mark.parametrize("n_layers", N_LAYERS)
@pytest.mark.parametrize("kind", ["per_position", "conv"])
def test_training_step(benchmark, kind, n_layers, names, data, device):
    benchmark.group = f"train-step {device.type} block={2**n_layers}"
    model = workloads.models(n_layers, data.vocab, device)[kind]
    step, positions = workloads.training_step(model, kind, names, data.vocab, device)
    record(benchmark, device, kind=kind, block=2**n_layers, positions=positions, variant="fp32")
    benchmark.pedantic(workloads.synchronised(step, device), **ROUNDS)


# torch.compile takes tens of seconds per model, so it is measured at the two ends only
GPU_VARIANTS = [("bf16", 3), ("bf16", 6), ("bf16", 8), ("compile", 3), ("compile", 8)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(("variant", "n_layers"), GPU_VARIANTS)
@pytest.mark.parametrize("kind", ["per_position", "conv"])
def test_training_step_gpu_variants(benchmark, kind, n_layers, variant, names, data):
    device = torch.device("cuda")
    benchmark.group = f"train-step cuda-{variant} block={2**n_layers}"
    model = workloads.models(n_layers, data.vocab, device)[kind]
    if variant == "compile":
        model = torch.compile(model, dynamic=True)
    precision = "bf16" if variant == "bf16" else "fp32"
    step, positions = workloads.training_step(model, kind, names, data.vocab, device, precision)
    step = workloads.synchronised(step, device)
    # compile here, before the fixture is used: a per-test timeout (pytest-timeout) that stops a slow
    # compile then fails this test alone, where one inside pedantic() breaks pytest-benchmark's JSON
    step()
    record(benchmark, device, kind=kind, block=2**n_layers, positions=positions, variant=variant)
    benchmark.pedantic(step, **ROUNDS)


@pytest.mark.parametrize("kind", ["per_position", "conv"])
def test_eval_validation_split(benchmark, kind, data, device):
    benchmark.group = f"eval-val {device.type} block=8"
    model = workloads.models(3, data.vocab, device)[kind]
    run, positions = workloads.eval_pass(model, kind, data.val, data.vocab, device)
    record(benchmark, device, kind=kind, block=8, positions=positions, variant="fp32")
    benchmark.pedantic(workloads.synchronised(run, device), **ROUNDS)


@pytest.mark.parametrize("n_layers", [3, 6, 8])
@pytest.mark.parametrize("use_cache", [False, True], ids=["recompute", "cached"])
def test_sampling(benchmark, use_cache, n_layers, data, device):
    benchmark.group = f"sample {device.type} block={2**n_layers}"
    model = workloads.models(n_layers, data.vocab, device)["conv"]
    run, n_names = workloads.sampling(model, data.vocab, use_cache)
    record(benchmark, device, kind="cached" if use_cache else "recompute", block=2**n_layers, names=n_names)
    benchmark.pedantic(workloads.synchronised(run, device), **ROUNDS)
