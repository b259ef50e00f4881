"""The least speedup this project accepts on a CPU, as ratios of the two code paths timed in turn in
one run (on a shared machine a ratio holds where a time does not).

Training: conv over the per-position tree, about two thirds of the node-count limit ((2**L - 1) / L: 2.33x,
10.5x and 31.9x at blocks 8, 64 and 256), which the conv model beats on short names (see
workloads.multiply_add_ratio). Sampling: the cache over recomputing every window, at block 256.
"""

import pytest
import torch

from wavenet_names.configuration import settings
from wavenet_names.training import Trainer

import workloads

TRAINING_FLOORS = {3: 1.6, 6: 7.0, 8: 20.0}  # n_layers -> conv / per-position, training step
SAMPLING_FLOOR = 10.0  # cached / recomputed generation per name, block 256
DISTILLED_CEILING = 2.0  # a distilled training step / a plain one, the default model and batch


@pytest.mark.parametrize("n_layers", list(TRAINING_FLOORS))
def test_training_step_speedup(n_layers, names, data):
    device = torch.device("cpu")
    pair = workloads.models(n_layers, data.vocab, device)
    steps = {kind: workloads.training_step(model, kind, names, data.vocab, device)[0] for kind, model in pair.items()}
    seconds = workloads.interleaved_medians(steps, repeats=5 if n_layers == 8 else 9)
    speedup = seconds["per_position"] / seconds["conv"]
    print(f"block={2**n_layers} training-step speedup {speedup:.2f}x")
    assert speedup >= TRAINING_FLOORS[n_layers]


def test_cached_sampling_speedup(data):
    model = workloads.models(8, data.vocab, torch.device("cpu"))["conv"]
    runs = {
        name: workloads.sampling(model, data.vocab, use_cache)[0]
        for name, use_cache in [("recompute", False), ("cached", True)]
    }
    seconds = workloads.interleaved_medians(runs, repeats=5)
    speedup = seconds["recompute"] / seconds["cached"]
    print(f"block=256 sampling speedup {speedup:.2f}x")
    assert speedup >= SAMPLING_FLOOR


def test_a_distilled_step_costs_at_most_twice_a_plain_one(data):
    """train --teacher keeps the teacher's probabilities, computed once: a step adds their rows'
    gather and a KL to the plain step, and no teacher's forward (the shipped model teaches here)."""
    trainers = {}
    for name, options in [("plain", {}), ("distilled", {"teacher": "names"})]:
        model_config, config = settings(options)
        trainers[name] = Trainer(model_config.sized_for(data), config, data)
    seconds = workloads.interleaved_medians({name: t.train_step for name, t in trainers.items()}, repeats=21)
    cost = seconds["distilled"] / seconds["plain"]
    print(f"distilled step / plain step {cost:.2f}x")
    assert cost <= DISTILLED_CEILING
