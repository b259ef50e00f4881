"""How often a ConvWaveNet training step makes the host wait for the device.

On a GPU every read of a device value (an .item(), a bool(), a tolist(), a nonzero whose size the
host needs) stalls the host until the queue drains; at the moderate batches a GPU otherwise races
through, those stalls are the step. These tests count them on the CPU, where the same operators
run, so that a new one cannot creep in unnoticed.
"""

from types import SimpleNamespace

import pytest
import torch

from wavenet_names import ConvWaveNet, encode_names, pad_batch
from wavenet_names.data import NameBatches
from wavenet_names.training import evaluate
from wavenet_names.wavenet import Blocks

from helpers import HostReads


def training_step_reads(model, words, vocab) -> list[str]:
    idx, targets = pad_batch(*encode_names(words, vocab), model.block_size)
    with HostReads() as counter:
        _, loss = model(idx, targets)
        loss.backward()
    return counter.reads


@pytest.mark.parametrize("n_layers", [3, 6])
@pytest.mark.parametrize(
    "blocks", [Blocks(), Blocks(gated=True, residual=True, skip=True, cycles=2)], ids=["lecture", "wavenet"]
)
def test_a_training_step_reads_the_device_once(n_layers, blocks, words, vocab):
    """One read, whatever the depth: the layout checks and every size the packing needs (how many
    characters, and per dilation how many reach past it) come back together; nothing in the backward
    pass. The words' longest name has 15 characters, so at 6 layers some dilations reach no name."""
    model = ConvWaveNet(len(vocab), 8, 16, n_layers, blocks)
    reads = training_step_reads(model, words, vocab)
    assert reads == ["tolist"], reads


def test_evaluation_reads_the_device_once_per_chunk_and_once_for_the_loss(words, vocab):
    """Each chunk's forward reads its layout once; the losses are summed on the device. (The chunks
    are cut beforehand: cutting them reads the lengths, which live on the CPU whatever the device.)"""
    model = ConvWaveNet(len(vocab), 8, 16, 3)
    batches = NameBatches(words, vocab, model.block_size)
    chunks = list(batches.chunks(15))  # 4 chunks of the 48 names: 15, 15, 15 and 3
    split = SimpleNamespace(chunks=lambda size: chunks, n_examples=batches.n_examples)
    with HostReads() as counter:
        loss = evaluate(model, split)
    assert counter.reads == ["tolist"] * 4 + ["__float__"], counter.reads
    idx, targets = pad_batch(*encode_names(words, vocab), model.block_size)
    with torch.no_grad():
        whole = model.eval()(idx, targets)[1]  # the mean over every example at once
    assert loss == pytest.approx(float(whole), rel=1e-6)


def test_the_counter_sees_reads(words, vocab):
    """The counter itself: a bool mask index and an .item() are reads, arithmetic is not."""
    x = torch.arange(5.0)
    with HostReads() as counter:
        (x[x > 2].sum() * 2).item()
    assert counter.reads == ["__getitem__", "item"]
