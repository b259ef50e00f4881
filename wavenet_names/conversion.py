"""The lecture's tree and the dilated convolution are one function: each model converted into the
other, with the same weights and BatchNorm buffers (and, for a conditional model, the same label
embeddings and projections V). tests/test_equivalence.py proves that the pair
agrees at every position of every name.

A tree level's Linear weight (n_hidden, 2 * n_in) is [left child | right child]; the convolution's
kernel (n_hidden, n_in, 2) holds the same two halves as its taps, x[t - dilation] then x[t].
"""

import torch
from einops import rearrange
from torch import nn

from .layers import BatchDimOnlyBatchNorm
from .mlp import HierarchicalMLP
from .wavenet import ConvWaveNet


def conv_from_tree(tree: HierarchicalMLP) -> ConvWaveNet:
    """A ConvWaveNet that computes the same function as `tree`, in the same dtype, device and mode."""
    if isinstance(tree.tree[0][2], BatchDimOnlyBatchNorm):
        raise ValueError("a tree with the lecture's batch-norm bug has per-position statistics: no conv equivalent")
    conv = _sized_like(ConvWaveNet, tree, n_layers=len(tree.tree))
    with torch.no_grad():
        for layer, node in zip(conv.layers, tree.tree, strict=True):
            layer.conv.weight.copy_(rearrange(node[1].weight, "h (k c) -> h c k", k=2))
            layer.norm.load_state_dict(node[2].state_dict())
        for layer, condition in zip(conv.layers, tree.conditions or [], strict=False):
            layer.condition.weight.copy_(condition.weight)  # V, for every node of the level
    return conv


def tree_from_conv(conv: ConvWaveNet) -> HierarchicalMLP:
    """A HierarchicalMLP that computes the same function as `conv`: only the lecture's configuration
    (no gates, residuals, skips, repeated cycles, dropout or other norms) is a tree."""
    if not conv.blocks.lecture:
        raise ValueError(f"only the lecture's configuration has a tree equivalent, not {conv.blocks}")
    tree = _sized_like(HierarchicalMLP, conv, n_layers=len(conv.layers))
    with torch.no_grad():
        for node, layer in zip(tree.tree, conv.layers, strict=True):
            node[1].weight.copy_(rearrange(layer.conv.weight, "h c k -> h (k c)"))
            node[2].load_state_dict(layer.norm.state_dict())
        for condition, layer in zip(tree.conditions or [], conv.layers, strict=False):
            condition.weight.copy_(layer.condition.weight)
    return tree


def _sized_like(cls, src: nn.Module, n_layers: int) -> nn.Module:
    """A `cls` of src's sizes, dtype, device and mode, with src's embedding, label embedding and head
    weights."""
    vocab_size, n_embd = src.wte.weight.shape
    labels = {}
    if src.labels is not None:
        labels = dict(label_sizes=tuple(e.num_embeddings for e in src.labels.columns), label_dropout=src.labels.dropout)
    model = cls(vocab_size, n_embd, src.lm_head.in_features, n_layers, **labels).to(src.wte.weight)
    with torch.no_grad():
        model.wte.weight.copy_(src.wte.weight)
        model.lm_head.load_state_dict(src.lm_head.state_dict())
        if src.labels is not None:
            model.labels.load_state_dict(src.labels.state_dict())
    return model.train(src.training)
