"""Every WaveNet block option: shapes, causality, padding, cached generation, training, and the
lecture's configuration, the only one with a tree equivalent."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from wavenet_names import (
    BatchNorm,
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
    state = model.init_state(len(idx))
    for j in range(targets.shape[1]):
        step_logits, state = model.step(idx[:, j + model.block_size - 1], state)
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
    plain = model.forward_full(idx)  # (B, T - block_size + 1, vocab), every column computed
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


def reference_wavenet(model: ConvWaveNet, idx: torch.Tensor) -> torch.Tensor:
    """The model's function as WaveNet draws it, written here from torch's own convolution and norms
    and sharing no code with ConvWaveNet: a stack of F.conv1d(kernel_size=2, dilation=d) over every
    column of idx, the '.' padding included, each shortening the sequence by d. Returns the logits
    of the last T - block_size + 1 columns, (B, T - block_size + 1, vocab)."""
    x = model.wte(idx).transpose(1, 2)  # (B, C, T): channels first, as Conv1d takes them
    skips = []
    for layer in model.layers:
        pre = F.conv1d(x, layer.conv.weight, layer.conv.bias, dilation=layer.dilation)  # (B, n_conv, T - d)
        norm = layer.norm
        if isinstance(norm, nn.LayerNorm):  # over the channels of each column
            pre = F.layer_norm(pre.transpose(1, 2), norm.normalized_shape, norm.weight, norm.bias).transpose(1, 2)
        elif not isinstance(norm, nn.Identity):  # BatchNorm, in eval mode: its running statistics
            pre = F.batch_norm(pre, norm.running_mean, norm.running_var, norm.weight, norm.bias, eps=norm.eps)
        if model.blocks.gated:
            filter_, gate = pre.chunk(2, dim=1)
            z = torch.tanh(filter_) * torch.sigmoid(gate)  # (B, n_hidden, T - d)
        else:
            z = torch.tanh(pre)
        if layer.skip is not None:  # a 1x1 convolution
            skips.append(F.conv1d(z, layer.skip.weight[..., None], layer.skip.bias))
        x = (
            x[:, :, layer.dilation :] + F.conv1d(z, layer.residual.weight[..., None], layer.residual.bias)
            if layer.residual is not None
            else z
        )
    n_out = x.shape[2]  # the last layer's columns; earlier skips are longer, and end at the same column
    h = F.relu(sum(s[:, :, -n_out:] for s in skips)) if skips else x
    return F.linear(h.transpose(1, 2), model.lm_head.weight, model.lm_head.bias)


def randomised(model: ConvWaveNet) -> ConvWaveNet:
    """Norms that are no identity, and the lecture's 0.1 on the output layer undone, so that a
    mismatch anywhere shows in the logits."""
    with torch.no_grad():
        model.lm_head.weight.mul_(10)
        for module in model.modules():
            if isinstance(module, (BatchNorm, nn.LayerNorm)):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(std=0.2)
    return model


@pytest.mark.parametrize("name", list(OPTIONS))
def test_the_packed_model_is_a_plain_dilated_convolution_stack(name, words, vocab):
    """The independent reference: packing, the shared all-'.' row and the skip columns reproduce a
    plain Conv1d stack over the padded layout at every position of every name (eval mode, where
    dropout is off and BatchNorm uses its running statistics)."""
    model = randomised(trained(OPTIONS[name], words, vocab))  # trained: BatchNorm's running statistics moved
    idx, targets = pad_batch(*encode_names(words, vocab), model.block_size)
    logits, _ = model(idx, targets)
    expected = reference_wavenet(model, idx)
    valid = targets != -1
    assert expected.shape == logits.shape
    assert expected[valid].std(0).mean() > 0.01  # positions differ by 1e8 times the tolerance: a mismatch shows
    torch.testing.assert_close(logits[valid], expected[valid], rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", ["layernorm", "no-norm"])
def test_without_batch_statistics_training_mode_matches_the_reference_too(name, words, vocab):
    """With no BatchNorm there are no batch statistics, so training mode is the same function: the
    training loss and its gradients agree with the reference's."""
    model = randomised(ConvWaveNet(len(vocab), 12, 16, 3, OPTIONS[name]).double()).train()
    idx, targets = pad_batch(*encode_names(words, vocab), model.block_size)
    _, loss = model(idx, targets)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    valid = targets != -1
    reference_loss = F.cross_entropy(reference_wavenet(model, idx)[valid], targets[valid])
    reference_grads = torch.autograd.grad(reference_loss, list(model.parameters()))
    torch.testing.assert_close(loss, reference_loss, rtol=1e-12, atol=0)
    names = [name for name, _ in model.named_parameters()]
    for name, grad, expected in zip(names, grads, reference_grads, strict=True):
        torch.testing.assert_close(grad, expected, rtol=1e-9, atol=1e-15, msg=name)
