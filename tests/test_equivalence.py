"""The project's proof: ConvWaveNet and HierarchicalMLP with the same weights are the same function.

They agree in eval mode, where both use BatchNorm's running statistics. In training mode they do not,
and must not: the conv model computes a tree node shared by several positions once, so it enters the
batch statistics once, while the per-position model recomputes it for every window that contains it and
counts it that many times (a node near the root of a block-64 window is in 1 window, a leaf in up to
32). Both are valid batch statistics of different populations of nodes.

Conditional models (global conditioning on labels) are held to the same proof: with labels, every test
runs again, each name's labels (and every window's, its name's) entering both models.
"""

import pytest
import torch
from einops import rearrange

from wavenet_names import ConvWaveNet, HierarchicalMLP, conv_from_tree, tree_from_conv
from wavenet_names.batches import WindowBatches
from wavenet_names.packing import bucket

from helpers import LABEL_SIZES, both_views, random_labels, sgd_steps, summed_loss

TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-5}


def randomise_batchnorm(model):
    """Random weights are not enough: fresh BatchNorms are identities in eval mode."""
    with torch.no_grad():
        for node in model.tree:
            norm = node[2]
            norm.weight.normal_()
            norm.bias.normal_()
            norm.running_mean.normal_(std=0.5)
            norm.running_var.uniform_(0.5, 2.0)


def unscaled(model):
    """Undo the lecture's 0.1 on the output layer, so that logits differ by O(1) between positions and
    a mismatch anywhere in the tree shows."""
    with torch.no_grad():
        model.lm_head.weight.mul_(10)
    return model


def paired_models(state, n_layers, dtype, words, vocab, labelled=False):
    """A tree and a conv model of the same weights, and the words as both views. labelled: conditional
    models, with random labels per name (unknown among them), as (per window, per name); else Nones."""
    X, Y, idx, targets = both_views(words, vocab, 2**n_layers)
    sizes = dict(label_sizes=LABEL_SIZES) if labelled else {}
    name_labels = random_labels(len(words)) if labelled else None
    window_labels = WindowBatches(words, vocab, 2**n_layers, labels=name_labels).labels
    if state == "trained_conv":
        conv = unscaled(ConvWaveNet(len(vocab), 10, 32, n_layers, **sizes).to(dtype))
        tree = tree_from_conv(sgd_steps(conv, idx, targets, labels=name_labels))
    else:
        tree = unscaled(HierarchicalMLP(len(vocab), 10, 32, n_layers, **sizes).to(dtype))
        if state == "random":
            randomise_batchnorm(tree)
        else:
            sgd_steps(tree, X, Y, labels=window_labels)
        conv = conv_from_tree(tree)
    tree.zero_grad(set_to_none=True)
    conv.zero_grad(set_to_none=True)
    return tree.eval(), conv.eval(), (X, Y, idx, targets), (window_labels, name_labels)


def assert_label_gradients_close(conv, tree, **close):
    """A conditional pair's label embeddings and projections V got the same gradients."""
    if tree.labels is None:
        return
    for a, b in zip(conv.labels.columns, tree.labels.columns, strict=True):
        torch.testing.assert_close(a.weight.grad, b.weight.grad, **close)
    for layer, condition in zip(conv.layers, tree.conditions, strict=True):
        torch.testing.assert_close(layer.condition.weight.grad, condition.weight.grad, **close)


@pytest.mark.parametrize("labelled", [False, True], ids=["unlabelled", "labelled"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("state", ["random", "trained_tree", "trained_conv"])
@pytest.mark.parametrize("n_layers", [1, 2, 3, 4, 5, 6])
def test_logits_and_gradients_agree(n_layers, state, dtype, labelled, words, vocab):
    tree, conv, (X, Y, idx, targets), (window_labels, name_labels) = paired_models(
        state, n_layers, dtype, words, vocab, labelled
    )
    tree_logits, _ = tree(X, Y, labels=window_labels)  # (N, vocab), one row per window
    conv_logits, _ = conv(idx, targets, labels=name_labels)  # (B, T, vocab), one row per position of every name
    valid = targets != -1
    diff = (conv_logits[valid] - tree_logits).abs().max().item()
    assert diff <= TOLERANCE[dtype], f"max |diff| {diff:.3g}"
    assert tree_logits.std() > 0.3  # the comparison is not between two near-constant outputs
    if labelled:  # and the labels change the outputs: they are not ignored by both models alike
        unknown_logits, _ = conv(idx, targets)
        assert (unknown_logits[valid] - conv_logits[valid]).abs().max() > 0.1

    summed_loss(tree_logits, Y).backward()
    summed_loss(conv_logits, targets).backward()
    # gradients of a sum over ~400 positions, accumulated in another order: float32 keeps ~1e-5 of them
    close = dict(rtol=1e-7, atol=1e-9) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(conv.wte.weight.grad, tree.wte.weight.grad, **close)
    torch.testing.assert_close(conv.lm_head.weight.grad, tree.lm_head.weight.grad, **close)
    torch.testing.assert_close(conv.lm_head.bias.grad, tree.lm_head.bias.grad, **close)
    for layer, node in zip(conv.layers, tree.tree, strict=True):
        conv_weight_grad = rearrange(layer.conv.weight.grad, "h c k -> h (k c)")
        torch.testing.assert_close(conv_weight_grad, node[1].weight.grad, **close)
        torch.testing.assert_close(layer.norm.weight.grad, node[2].weight.grad, **close)
        torch.testing.assert_close(layer.norm.bias.grad, node[2].bias.grad, **close)
    assert_label_gradients_close(conv, tree, **close)


@pytest.mark.parametrize("labelled", [False, True], ids=["unlabelled", "labelled"])
@pytest.mark.parametrize("layout", ["exact", "bucket"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n_layers", [1, 3, 6])
def test_training_loss_and_its_gradients_agree(n_layers, dtype, layout, labelled, words, vocab):
    """The loss the models train on, not one rebuilt from their logits: ConvWaveNet takes it from its
    packed rows (every name's first position from the one shared row, or with labels from the name's
    own start row), the tree from its windows. In a bucket (a fixed-shape step), the left inputs come
    by a shift and a select, not a gather, and rows that hold nothing follow the names."""
    tree, conv, (X, Y, idx, targets), (window_labels, name_labels) = paired_models(
        "trained_tree", n_layers, dtype, words, vocab, labelled
    )
    _, tree_loss = tree(X, Y, labels=window_labels)
    starts = len(targets) if labelled else 1
    rows = {"rows": bucket(starts + len(Y) - len(targets)) + 5} if layout == "bucket" else {}  # rows to spare
    _, conv_loss = conv(idx, targets, labels=name_labels, **rows)
    assert conv_loss.dtype == tree_loss.dtype == dtype  # a float64 check stays float64 to the end
    torch.testing.assert_close(conv_loss, tree_loss, rtol=TOLERANCE[dtype], atol=0)
    tree_loss.backward()
    conv_loss.backward()
    close = dict(rtol=1e-7, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(conv.wte.weight.grad, tree.wte.weight.grad, **close)
    torch.testing.assert_close(conv.lm_head.weight.grad, tree.lm_head.weight.grad, **close)
    for layer, node in zip(conv.layers, tree.tree, strict=True):
        torch.testing.assert_close(rearrange(layer.conv.weight.grad, "h c k -> h (k c)"), node[1].weight.grad, **close)
        torch.testing.assert_close(layer.norm.weight.grad, node[2].weight.grad, **close)
    assert_label_gradients_close(conv, tree, **close)


@pytest.mark.parametrize("labelled", [False, True], ids=["unlabelled", "labelled"])
@pytest.mark.parametrize("n_layers", [1, 3, 6])
def test_conv_on_any_window_is_the_tree(n_layers, labelled, words, vocab):
    """Without the '.' prefix, the conv model runs as a plain valid convolution: on a window of exactly
    block_size characters it has one output, the tree's."""
    tree, conv, _, _ = paired_models("trained_tree", n_layers, torch.float64, words, vocab, labelled)
    X = torch.randint(1, len(vocab), (64, 2**n_layers))  # windows that do not start with '.'
    labels = random_labels(64) if labelled else None
    conv_logits = conv.forward_full(X, labels)  # (N, 1, vocab)
    assert conv_logits.shape == (len(X), 1, len(vocab))
    torch.testing.assert_close(conv_logits[:, 0], tree(X, labels=labels)[0], rtol=0, atol=1e-9)


@pytest.mark.parametrize("label_sizes", [(), LABEL_SIZES])
@pytest.mark.parametrize("n_layers", [1, 4])
def test_conversions_round_trip(n_layers, label_sizes, vocab):
    tree = HierarchicalMLP(len(vocab), 8, 16, n_layers, label_sizes=label_sizes)
    randomise_batchnorm(tree)
    back = tree_from_conv(conv_from_tree(tree))
    state, back_state = tree.state_dict(), back.state_dict()
    assert state.keys() == back_state.keys()
    for key in state:
        assert torch.equal(state[key], back_state[key]), key


def test_parameter_count_matches_the_lecture(vocab):
    from wavenet_names import count_params

    assert count_params(HierarchicalMLP(27, 24, 128, 3)) == 76579  # the lecture's final model
    assert count_params(ConvWaveNet(27, 24, 128, 3)) == 76579
