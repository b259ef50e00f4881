"""ConvWaveNet (wavenet.py): properties that hold whatever its weights, causality, padding is free,
and the masked BatchNorm statistics are those of the valid positions alone, for a conditional model
too ("labelled": random labels per name, of two columns); and every WaveNet block option: shapes,
causality, padding, cached generation, training, and the lecture's configuration, the only one with
a tree equivalent."""

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
from wavenet_names.choosing import SampleConfig
from wavenet_names.sampling import generate

from helpers import LABEL_SIZES, both_views, random_labels, sgd_steps

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


def a_little_trained(blocks, words, vocab, n_layers=3):
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
    model = a_little_trained(OPTIONS[name], words, vocab)
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
    model = a_little_trained(OPTIONS[name], words, vocab)
    idx, targets = pad_batch(*encode_names(words, vocab), model.block_size)
    packed, _ = model(idx, targets)
    plain = model.forward_full(idx)  # (B, T - block_size + 1, vocab), every column computed
    valid = targets != -1
    torch.testing.assert_close(packed[valid], plain[valid], rtol=0, atol=1e-10)


def test_only_the_lectures_configuration_converts(words, vocab):
    with pytest.raises(ValueError, match="only the lecture's configuration"):
        tree_from_conv(ConvWaveNet(len(vocab), 8, 16, 2, Blocks(gated=True)))
    with pytest.raises(ValueError, match="^gated is not an option of the hierarchical model, which takes n_embd, "):
        ModelConfig.of("hierarchical", gated=True)
    assert build_model(ModelConfig.of("conv", cycles=2, n_layers=3)).block_size == 15


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
    model = randomised(a_little_trained(OPTIONS[name], words, vocab))  # trained: BatchNorm's running statistics moved
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


N_LAYERS = [1, 3, 5]


LABELLED = pytest.mark.parametrize("labelled", [False, True], ids=["unlabelled", "labelled"])


def maybe_labels(n: int, labelled: bool) -> torch.Tensor | None:
    """n rows of random labels, or None when not labelled."""
    return random_labels(n) if labelled else None


def trained_conv(words, vocab, n_layers, labels=None):
    _, _, idx, targets = both_views(words, vocab, 2**n_layers)
    sizes = dict(label_sizes=LABEL_SIZES) if labels is not None else {}
    return sgd_steps(ConvWaveNet(len(vocab), 10, 32, n_layers, **sizes).double(), idx, targets, labels=labels).eval()


@LABELLED
@pytest.mark.parametrize("n_layers", N_LAYERS)
def test_a_later_character_never_changes_an_earlier_logit(n_layers, labelled, words, vocab):
    model = trained_conv(words, vocab, n_layers, maybe_labels(len(words), labelled))
    idx, targets = pad_batch(*encode_names(["alexandria"], vocab), model.block_size)
    labels = maybe_labels(1, labelled)
    logits, _ = model(idx, targets, labels=labels)
    for p in range(10):  # change the p-th character of the name: outputs 0..p do not see it
        changed = idx.clone()
        column = model.block_size + p  # idx is block_size '.' tokens, then the name
        changed[0, column] = vocab.stoi["z"] if idx[0, column] != vocab.stoi["z"] else 1
        new_logits, _ = model(changed, targets, labels=labels)
        assert torch.equal(new_logits[0, : p + 1], logits[0, : p + 1])
        assert not torch.allclose(new_logits[0, p + 1], logits[0, p + 1])  # the next output does see it


@LABELLED
@pytest.mark.parametrize("n_layers", N_LAYERS)
def test_padded_equals_truncated_and_batch_composition_does_not_matter(n_layers, labelled, words, vocab):
    labels = maybe_labels(len(words), labelled)
    model = trained_conv(words, vocab, n_layers, labels)
    batch_idx, batch_targets = pad_batch(*encode_names(words, vocab), model.block_size)
    batch_logits, _ = model(batch_idx, batch_targets, labels=labels)
    no_target_logits, _ = model(batch_idx, labels=labels)  # every column computed, padding included
    for i in [0, 5, len(words) - 1]:
        idx, targets = pad_batch(*encode_names([words[i]], vocab), model.block_size)  # no padding
        alone, _ = model(idx, targets, labels=None if labels is None else labels[i : i + 1])
        n = len(words[i]) + 1
        torch.testing.assert_close(batch_logits[i, :n], alone[0], rtol=0, atol=1e-12)
        torch.testing.assert_close(no_target_logits[i, :n], alone[0], rtol=0, atol=1e-12)


@LABELLED
@pytest.mark.parametrize("n_layers", N_LAYERS)
def test_extra_padding_changes_nothing_in_training(n_layers, labelled, words, vocab):
    """Padding counts neither in the loss nor in the BatchNorm statistics: a batch padded further
    gives the same training-mode loss, gradients and running statistics; and so does one given three
    rows with no name at all, but for a conditional model, where each such row is a name of no
    characters whose start node counts."""
    idx, targets = pad_batch(*encode_names(words, vocab), 2**n_layers)
    more_idx = F.pad(idx, (0, 7, 0, 0 if labelled else 3))
    more_targets = F.pad(targets, (0, 7, 0, 0 if labelled else 3), value=-1)
    sizes = dict(label_sizes=LABEL_SIZES) if labelled else {}
    model = ConvWaveNet(len(vocab), 10, 32, n_layers, **sizes).double()
    twin = ConvWaveNet(len(vocab), 10, 32, n_layers, **sizes).double()
    twin.load_state_dict(model.state_dict())
    labels = maybe_labels(len(words), labelled)
    _, loss = model(idx, targets, labels=labels)
    _, more_loss = twin(more_idx, more_targets, labels=labels)
    loss.backward()
    more_loss.backward()
    torch.testing.assert_close(more_loss, loss, rtol=0, atol=1e-12)
    for (name, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-10, atol=1e-12, msg=name)
    for (name, b), c in zip(model.named_buffers(), twin.buffers(), strict=True):
        torch.testing.assert_close(c, b, rtol=1e-10, atol=1e-12, msg=name)


def test_a_batch_of_empty_names_is_only_the_shared_first_position(words, vocab):
    """Names of no characters leave nothing to pack, only row 0 ('........' -> '.'): the same logits
    as any name's first position, and the loss of predicting the end there."""
    model = trained_conv(words, vocab, 3)
    idx, targets = pad_batch(*encode_names(["", ""], vocab), model.block_size)
    assert targets.shape == (2, 1)
    logits, loss = model(idx, targets)
    named, _ = model(*pad_batch(*encode_names(words[:1], vocab), model.block_size))
    torch.testing.assert_close(logits[:, 0], named[0, :1].expand(2, -1), rtol=0, atol=1e-12)
    torch.testing.assert_close(loss, F.cross_entropy(logits[:, 0], targets[:, 0]), rtol=0, atol=1e-12)


def test_masked_batchnorm_statistics_are_those_of_the_distinct_nodes(words, vocab):
    """The first layer's node at each position fuses (previous char, char). Its batch statistics,
    computed by hand over the valid positions, each node once (the all-'.' node, shared by every
    name's first position, once), are what the running estimates move towards: padding is not in."""
    model = ConvWaveNet(len(vocab), 10, 32, 3).double()
    X, _, idx, targets = both_views(words, vocab, model.block_size)
    nodes = torch.cat([X[:1, -2:], X[X[:, -1] != 0, -2:]])  # the '..' node once, then each (prev, char)
    pairs = model.wte(nodes).flatten(1)  # (nodes, 2 * n_embd)
    weight = model.layers[0].conv.weight  # (n_hidden, n_embd, 2)
    pre = pairs @ torch.cat([weight[:, :, 0], weight[:, :, 1]], dim=1).T  # (nodes, n_hidden)
    model.train()
    model(idx, targets)
    norm = model.layers[0].norm
    momentum = norm.momentum
    torch.testing.assert_close(norm.running_mean, momentum * pre.mean(0).detach())
    torch.testing.assert_close(norm.running_var, (1 - momentum) + momentum * pre.var(0).detach())
    assert (targets == -1).sum() > len(words)  # padding was there to leave out


def test_a_conditional_models_statistics_count_each_names_start_node_once(words, vocab):
    """With labels, the node over the padding depends on the name's labels: each name has its own,
    counted once, beside each (prev, char) node, all with their name's V h added."""
    model = ConvWaveNet(len(vocab), 10, 32, 3, label_sizes=LABEL_SIZES).double()
    X, _, idx, targets = both_views(words, vocab, model.block_size)
    labels = random_labels(len(words))
    owner = torch.repeat_interleave(torch.arange(len(words)), torch.tensor([len(w) + 1 for w in words]))
    real = X[:, -1] != 0  # the windows whose last character is a real one: a node of its own
    nodes = torch.cat([X[:1, -2:].expand(len(words), -1), X[real, -2:]])  # each name's '..' node, then the pairs
    node_labels = torch.cat([labels, labels[owner[real]]])  # (nodes, K)
    weight = model.layers[0].conv.weight  # (n_hidden, n_embd, 2)
    pre = model.wte(nodes).flatten(1) @ torch.cat([weight[:, :, 0], weight[:, :, 1]], dim=1).T  # (nodes, n_hidden)
    pre = pre + model.layers[0].condition(model.labels(node_labels))  # eval mode: no label dropout yet
    model.train()
    model(idx, targets, labels=labels)
    norm = model.layers[0].norm
    torch.testing.assert_close(norm.running_mean, norm.momentum * pre.mean(0).detach())
    torch.testing.assert_close(norm.running_var, (1 - norm.momentum) + norm.momentum * pre.var(0).detach())


def test_bad_targets_are_refused(words, vocab):
    model = ConvWaveNet(len(vocab), 10, 32, 2)
    idx, targets = pad_batch(*encode_names(words, vocab), model.block_size)
    with pytest.raises(ValueError, match="targets must be"):
        model(idx, targets[:, :-1])
    holes = targets.clone()
    holes[0, 0] = -1  # padding before the name's end: not the layout
    with pytest.raises(ValueError, match="right padding"):
        model(idx, holes)
    with pytest.raises(ValueError, match="at least block_size"):
        model(idx[:, :3])
