"""Shared test helpers: the same names as the lecture's windows and as conv batches."""

import torch
import torch.nn.functional as F

from wavenet_names import encode_names, pad_batch, windows


def both_views(words, vocab, block_size):
    """(X, Y) windows for the per-position models and (idx, targets) for ConvWaveNet, same examples in
    the same order: targets[targets != -1] == Y."""
    X, Y = windows(words, vocab, block_size)
    idx, targets = pad_batch(*encode_names(words, vocab), block_size)
    assert torch.equal(targets[targets != -1], Y)
    return X, Y, idx, targets


def sgd_steps(model, inputs, targets, steps=5, lr=0.1):
    """A few training-mode SGD steps, so that weights and BatchNorm running statistics move."""
    model.train()
    for _ in range(steps):
        model.zero_grad()
        _, loss = model(inputs, targets)
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= lr * p.grad
    return model


def summed_loss(logits, targets):
    """The sum (not the mean) of the per-position losses, so gradients compare across batch layouts."""
    valid = targets != -1
    return F.cross_entropy(logits[valid], targets[valid], reduction="sum")
