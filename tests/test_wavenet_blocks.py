"""Every WaveNet block option: shapes, causality, padding, cached generation, training, and the
lecture's configuration, the only one with a tree equivalent."""

import pytest
import torch

from wavenet_names import (
    Blocks,
    ConvWaveNet,
    ModelConfig,
    build_model,
    encode_names,
    pad_batch,
    tree_from_conv,
)
from wavenet_names.sampling import SampleConfig, generate

from helpers import sgd_steps

OPTIONS = {
    "gated": Blocks(gated=True),
    "residual": Blocks(residual=True),
    "skip": Blocks(skip=True),
    "cycles": Blocks(cycles=2),
    "layernorm": Blocks(norm="layer"),
    "no-norm": Blocks(norm="none"),
    "dropout": Blocks(dropout=0.2),
    "everything": Blocks(gated=True, residual=True, skip=True, cycles=2, dropout=0.1, norm="layer"),
}


def trained(blocks, words, vocab, n_layers=3):
    model = ConvWaveNet(len(vocab), 16, 16, n_layers, blocks).double()
    idx, targets = pad_batch(*encode_names(words, vocab), model.block_size)
    return sgd_steps(model, idx, targets, steps=3).eval()


@pytest.mark.parametrize("name", list(OPTIONS))
def test_shapes_and_receptive_field(name, vocab):
    blocks = OPTIONS[name]
    model = ConvWaveNet(len(vocab), 10, 16, 3, blocks)
    assert model.block_size == blocks.cycles * 7 + 1
    assert len(model.layers) == 3 * blocks.cycles
    idx, targets = pad_batch(*encode_names(["emma", "al"], vocab), model.block_size)
    logits, loss = model(idx, targets)
    assert logits.shape == (2, 5, len(vocab)) and loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())  # every option is wired into the graph


@pytest.mark.parametrize("name", list(OPTIONS))
def test_causality_padding_and_cached_generation(name, words, vocab):
    model = trained(OPTIONS[name], words, vocab)
    idx, targets = pad_batch(*encode_names(words[:6], vocab), model.block_size)
    logits, _ = model(idx, targets)
    changed = idx.clone()
    changed[:, model.block_size + 2] = 5  # the third character of every name
    assert torch.equal(model(changed, targets)[0][:, :3], logits[:, :3])  # outputs 0..2 never see it
    alone, _ = model(*pad_batch(*encode_names(words[:1], vocab), model.block_size))
    torch.testing.assert_close(alone[0], logits[0, : len(words[0]) + 1], rtol=0, atol=1e-10)
    full, _ = model(idx)
    cache = model.init_cache(len(idx))
    for j in range(targets.shape[1]):
        step_logits = model.step(cache, idx[:, j + model.block_size - 1])
        assert (step_logits - full[:, j]).abs().max() <= 1e-5
    config = SampleConfig(n=10, seed=4)
    assert generate(model, vocab, config) == generate(model, vocab, config, use_cache=False)


@pytest.mark.parametrize("name", list(OPTIONS))
def test_packing_equals_the_plain_convolution_over_every_padding_column(name, words, vocab):
    """The packed path (one shared all-'.' row, no padding columns) against the plain valid
    convolution over the whole layout, block_size '.' columns per name included."""
    model = trained(OPTIONS[name], words, vocab)
    idx, targets = pad_batch(*encode_names(words, vocab), model.block_size)
    packed, _ = model(idx, targets)
    plain = model._forward_full(idx)  # (B, T - block_size + 1, vocab), every column computed
    valid = targets != -1
    torch.testing.assert_close(packed[valid], plain[valid], rtol=0, atol=1e-10)


def test_only_the_lectures_configuration_converts(words, vocab):
    with pytest.raises(ValueError, match="only the lecture's configuration"):
        tree_from_conv(ConvWaveNet(len(vocab), 8, 16, 2, Blocks(gated=True)))
    with pytest.raises(ValueError, match="gated is an option of the conv model, not of hierarchical"):
        ModelConfig(kind="hierarchical", gated=True)
    assert build_model(ModelConfig(cycles=2, n_layers=3)).block_size == 15


@pytest.mark.parametrize(
    "field, value, message",
    [("cycles", 0, "^cycles must"), ("dropout", 1.0, "^dropout must"), ("norm", "group", "^norm must")],
)
def test_bad_block_options(field, value, message):
    with pytest.raises(ValueError, match=message):
        Blocks(**{field: value})
