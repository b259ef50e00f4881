"""Properties of ConvWaveNet that hold whatever its weights: causality, padding is free, and the
masked BatchNorm statistics are those of the valid positions alone; for a conditional model too
("labelled": random labels per name, of two columns)."""

import pytest
import torch
import torch.nn.functional as F

from wavenet_names import ConvWaveNet, encode_names, pad_batch

from helpers import LABEL_SIZES, both_views, random_labels, sgd_steps

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
