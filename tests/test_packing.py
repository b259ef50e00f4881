"""How a batch of names lies in ConvWaveNet's packed rows (packing.py), in its two layouts.

The exact layout's step reads the device once (on a GPU every read of a device value stalls the host
until the queue drains; at the moderate batches a GPU otherwise races through, those stalls are the
step), counted here on the CPU, where the same operators run, so that a new read cannot creep in.

A training step of fixed shapes lays the batch out in a bucket of packed rows (forward's `rows`), as
a compiled step, or one captured as CUDA graphs, needs. It must be the very step of the exact
layout, where every row holds a node: the same loss, gradients and BatchNorm statistics, whatever
rows the bucket adds; every shape inside it must depend on the bucket alone; and the host must never
wait for the device.
"""

import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from wavenet_names import ConvWaveNet, encode_names, pad_batch
from wavenet_names.batches import NameBatches
from wavenet_names.packing import bucket
from wavenet_names.wavenet import Blocks

from helpers import LABEL_SIZES, HostReads, cycled_labels

BLOCKS = {
    "lecture": Blocks(),
    "wavenet": Blocks(gated=True, residual=True, skip=True, cycles=2),
    "layernorm": Blocks(norm="layer", residual=True),
    "no-norm": Blocks(norm="none", gated=True),
}


LABELLED = pytest.mark.parametrize("labelled", [False, True], ids=["unlabelled", "labelled"])


def exact_rows(targets: torch.Tensor, labelled: bool = False) -> int:
    """The start rows (row 0, or a row per name with labels), then one row per target after each
    name's first."""
    return (len(targets) if labelled else 1) + int((targets[:, 1:] != -1).sum())


def name_labels(n: int, labelled: bool) -> torch.Tensor | None:
    return cycled_labels(n) if labelled else None


def training_step(model, idx, targets, labels=None, **rows):
    """Loss, gradients and running statistics of one training-mode step on a copy of `model`."""
    model = copy.deepcopy(model).train()
    model.load_state_dict(state)
    _, loss = model(idx, targets, labels=labels, **rows)
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters()}, dict(model.named_buffers())


state = None  # the weights every copy starts from (set by the test)


@LABELLED
@pytest.mark.parametrize("extra_rows", [0, 1, 37])
@pytest.mark.parametrize("wider", [0, 5], ids=["as-wide-as-the-longest", "wider"])
@pytest.mark.parametrize("blocks", BLOCKS.values(), ids=BLOCKS.keys())
def test_a_bucket_gives_the_loss_gradients_and_statistics_of_the_exact_layout(
    blocks, wider, extra_rows, labelled, words, vocab
):
    """In float64. The extra rows (and columns) hold nothing: they enter neither the loss nor the
    BatchNorm statistics, and no real row reads them (a left input always lies earlier)."""
    global state
    sizes = dict(label_sizes=LABEL_SIZES) if labelled else {}
    model = ConvWaveNet(len(vocab), 8, 16, 3, blocks, **sizes).double()
    with torch.no_grad():  # BatchNorm's and LayerNorm's affine parameters away from 1 and 0
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_()
    state = model.state_dict()
    tokens, lengths = encode_names(words, vocab)
    idx, targets = pad_batch(tokens, lengths, model.block_size)
    wide_idx, wide_targets = pad_batch(tokens, lengths, model.block_size, int(lengths.max()) + wider)
    labels = name_labels(len(words), labelled)
    loss, grads, buffers = training_step(model, idx, targets, labels)
    rows = exact_rows(targets, labelled) + extra_rows
    fixed_loss, fixed_grads, fixed_buffers = training_step(model, wide_idx, wide_targets, labels, rows=rows)
    torch.testing.assert_close(fixed_loss, loss, rtol=1e-12, atol=0)
    for name in grads:
        torch.testing.assert_close(fixed_grads[name], grads[name], rtol=1e-9, atol=1e-12, msg=name)
    for name in buffers:
        torch.testing.assert_close(fixed_buffers[name], buffers[name], rtol=1e-9, atol=1e-12, msg=name)


def test_in_eval_mode_a_bucket_gives_the_loss_and_no_logits(words, vocab):
    model = ConvWaveNet(len(vocab), 8, 16, 3).eval()
    idx, targets = pad_batch(*encode_names(words, vocab), model.block_size)
    with torch.no_grad():
        logits, loss = model(idx, targets)
        no_logits, fixed_loss = model(idx, targets, rows=bucket(exact_rows(targets)))
    assert logits is not None and no_logits is None
    torch.testing.assert_close(fixed_loss, loss)
    with pytest.raises(ValueError, match="rows needs targets"):
        model(idx, rows=100)


class Shapes(TorchDispatchMode):
    """Records every ATen operator a step runs, with the shapes of its outputs, backward included."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops.append((str(func), [tuple(t.shape) for t in tree_leaves(out) if isinstance(t, torch.Tensor)]))
        return out


def recorded_step(model, batch, **rows):
    model.zero_grad(set_to_none=True)  # every step starts from no gradients: none accumulates into another's
    with Shapes() as shapes:
        _, loss = model(batch.inputs, batch.targets, **rows)
        loss.backward()
    return shapes.ops


@pytest.mark.parametrize("blocks", BLOCKS.values(), ids=BLOCKS.keys())
def test_every_shape_in_a_fixed_step_depends_on_its_bucket_alone(blocks, all_words, vocab):
    """Two batches of different names laid out in the same bucket run the same operators on the same
    shapes: what a CUDA graph replays. Laid out exactly, the same two do not, so the recorder sees
    what the data decides."""
    model = ConvWaveNet(len(vocab), 8, 16, 3, blocks).train()
    batches = NameBatches(all_words[:2000], vocab, model.block_size)
    generator = torch.Generator().manual_seed(0)
    by_shape = {}
    while not any(len(drawn) > 1 for drawn in by_shape.values()):  # until two batches share a bucket
        batch = batches.sample(32, generator, fixed_shapes=True)
        drawn = by_shape.setdefault((batch.inputs.shape, batch.rows), [])
        if not drawn or batch.positions != drawn[0].positions:
            drawn.append(batch)
    a, b = next(drawn for drawn in by_shape.values() if len(drawn) > 1)
    assert a.rows == b.rows == bucket(a.rows) and a.rows >= 1 + a.positions - 32
    assert recorded_step(model, a, rows=a.rows) == recorded_step(model, b, rows=b.rows)
    assert recorded_step(model, a) != recorded_step(model, b)


@LABELLED
@pytest.mark.parametrize("blocks", BLOCKS.values(), ids=BLOCKS.keys())
def test_a_fixed_step_never_reads_the_device(blocks, labelled, words, vocab):
    """Not even once: the layout's facts came with the batch, counted on the CPU."""
    sizes = dict(label_sizes=LABEL_SIZES, label_dropout=0.1) if labelled else {}
    model = ConvWaveNet(len(vocab), 8, 16, 3, blocks, **sizes).train()
    idx, targets = pad_batch(*encode_names(words, vocab), model.block_size)
    rows = bucket(exact_rows(targets, labelled))  # what NameBatches.sample counts on the CPU
    with HostReads() as counter:
        _, loss = model(idx, targets, rows=rows, labels=name_labels(len(words), labelled))
        loss.backward()
    assert counter.reads == []


def test_buckets_are_few_and_at_most_an_eighth_larger():
    sizes = [bucket(n) for n in range(1, 4097)]
    assert all(n <= size <= max(8, n * 9 / 8) for n, size in zip(range(1, 4097), sizes, strict=True))
    assert all(bucket(size) == size for size in sizes)  # a bucket is its own bucket
    assert len(set(sizes)) == 8 * 9 + 1  # 8 from 8 to 15, 8 for each power of two from 16 to 2048, and 4096


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


def test_the_counter_sees_reads(words, vocab):
    """The counter itself: a bool mask index and an .item() are reads, arithmetic is not."""
    x = torch.arange(5.0)
    with HostReads() as counter:
        (x[x > 2].sum() * 2).item()
    assert counter.reads == ["__getitem__", "item"]
