"""Every kind of model, registered once, and ModelConfig, what a checkpoint needs to rebuild one.

A Kind holds all that the rest of the package knows about a kind of model: its class and how a
ModelConfig builds it, how a split is batched for it (whole names or the lecture's windows), its
default sizes, its training recipe, and whether it generates from a cache. Training, evaluation,
scoring, sampling, the command line and the experiments ask the registry, KINDS, and never test
for a kind themselves. Adding a kind: write its class, with the package's contract

    forward(idx, targets=None, labels=None) -> (logits, loss), targets of -1 ignored, labels (B, K)
    refused unless the kind is conditional, and a block_size attribute,

then add its Kind to KINDS below, and its own options, if any, to ModelConfig.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .data import NameBatches, Vocab, WindowBatches
from .ensemble import Ensemble
from .gru import GRU
from .mlp import FlatMLP, HierarchicalMLP
from .options import OptionError, check_at_least, check_choices, option
from .transformer import Transformer
from .wavenet import NORMS, Blocks, ConvWaveNet

# The lecture's recipe for its per-position models: batches of 32 windows, SGD at 0.1, then 0.01 for
# the last quarter of 200,000 steps. TrainConfig fields.
LECTURE_RECIPE = dict(
    steps=200_000,
    batch_size=32,
    optimizer="sgd",
    lr=0.1,
    schedule="step",
    warmup=0,
    weight_decay=0.0,
    eval_every=10_000,
)
FLAT_SIZES = dict(n_embd=10, n_hidden=200, block_size=3)  # the lecture's first MLP: ModelConfig fields

# makemore's own recipe for its models (its train.py defaults): batches of 32, AdamW at 5e-4 with
# weight decay 0.01, a constant rate. TrainConfig fields.
MAKEMORE_RECIPE = dict(batch_size=32, optimizer="adamw", lr=5e-4, schedule="constant", warmup=0, weight_decay=0.01)
# Its models' recipes here, tuned on val against the clock: the best of the settings in
# experiments/peer-recipes*.json at 300 s of training on this split (docs/experiments.md has the table).
# The Transformer overfits by 150 s at makemore's rate; 4 times the rate, dropout 0.1 (in its sizes)
# and a cosine over the steps that 300 s reach take it from 2.0053 to 1.9440. The GRU, still falling at
# 300 s with makemore's recipe (2.0025), overfits at higher rates unless its weights decay more: batches
# of 64, 4 times the rate, weight decay 0.1 and a cosine give 1.9860.
TRANSFORMER_RECIPE = {**MAKEMORE_RECIPE, "lr": 2e-3, "schedule": "cosine", "steps": 15_000}
GRU_RECIPE = {
    **MAKEMORE_RECIPE,
    "batch_size": 64,
    "lr": 2e-3,
    "schedule": "cosine",
    "weight_decay": 0.1,
    "steps": 36_000,
}


@dataclass(frozen=True)
class Kind:
    """One kind of model: everything the rest of the package asks about it."""

    name: str
    summary: str  # one line, for --help
    model: type[nn.Module]
    build: Callable[["ModelConfig"], nn.Module]
    layout: type[NameBatches] | type[WindowBatches]  # how a split is batched: whole names, or windows
    options: tuple[str, ...] = ()  # the ModelConfig fields that this kind alone takes
    unused: tuple[str, ...] = ()  # the ModelConfig fields of every kind that this kind does not read
    sizes: dict = field(default_factory=dict)  # its ModelConfig defaults, where they differ from the fields'
    recipe: dict = field(default_factory=dict)  # its TrainConfig defaults, where they differ from the fields'
    incremental: bool = False  # generates with a cache (init_cache, step): one node per layer and character
    # its prediction depends on the last block_size characters alone, so sampling may recompute a
    # window of them; a model of whole names (an unbounded context) must generate from a cache
    windowed: bool = True
    fixed_shapes: bool = False  # its forward takes rows: a batch laid out in a bucket (NameBatches.sample)
    conditional: bool = False  # takes labels (label_sizes, label_dropout): a table's label columns
    positional: bool = False  # has a position table: ModelConfig.positions, the data's longest item + 1


KINDS = {
    kind.name: kind
    for kind in [
        Kind(
            name="conv",
            summary="the lecture's tree as dilated convolutions over whole names (the default)",
            model=ConvWaveNet,
            build=lambda c: ConvWaveNet(
                c.vocab_size, c.n_embd, c.n_hidden, c.n_layers, c.blocks(), c.label_sizes, c.label_dropout
            ),
            layout=NameBatches,
            options=("gated", "residual", "skip", "cycles", "norm"),
            incremental=True,
            fixed_shapes=True,
            conditional=True,
        ),
        Kind(
            name="hierarchical",
            summary="the lecture's tree, run once per position, trained with the lecture's recipe",
            model=HierarchicalMLP,
            build=lambda c: HierarchicalMLP(
                c.vocab_size, c.n_embd, c.n_hidden, c.n_layers, c.batchnorm_bug, c.label_sizes, c.label_dropout
            ),
            layout=WindowBatches,
            options=("batchnorm_bug",),
            unused=("dropout",),
            recipe=LECTURE_RECIPE,
            conditional=True,
        ),
        Kind(
            name="flat",
            summary="the lecture's first MLP over a fixed context, trained with the lecture's recipe",
            model=FlatMLP,
            build=lambda c: FlatMLP(c.vocab_size, c.n_embd, c.n_hidden, c.block_size or FLAT_SIZES["block_size"]),
            layout=WindowBatches,
            options=("block_size",),
            unused=("n_layers", "dropout"),  # one hidden layer over its whole context: --block-size sets it
            sizes=FLAT_SIZES,
            recipe=LECTURE_RECIPE,
        ),
        Kind(
            name="transformer",
            summary="makemore's Transformer: causal self-attention over the whole name",
            model=Transformer,
            build=lambda c: Transformer(c.vocab_size, c.positions, c.n_embd, c.n_head, c.n_layers, c.dropout),
            layout=NameBatches,
            options=("n_head",),
            unused=("n_hidden",),  # its MLP is 4 n_embd wide, as makemore's
            sizes=dict(n_embd=64, n_layers=4, dropout=0.1),  # makemore's sizes; the dropout its tuned recipe's
            recipe=TRANSFORMER_RECIPE,
            incremental=True,
            windowed=False,
            positional=True,
        ),
        Kind(
            name="gru",
            summary="makemore's GRU: a recurrent model of the whole name",
            model=GRU,
            build=lambda c: GRU(c.vocab_size, c.n_embd, c.n_hidden),
            layout=NameBatches,
            unused=("n_layers", "dropout"),  # one cell
            sizes=dict(n_embd=64, n_hidden=64),  # makemore's n_embd and n_embd2
            recipe=GRU_RECIPE,
            incremental=True,
            windowed=False,
        ),
    ]
}


@dataclass
class ModelConfig:
    """What a checkpoint needs to rebuild a model. The defaults are the lecture's final tree (76,579
    parameters); a kind may have its own (see Kind.sizes)."""

    kind: str = option(
        "conv", "; ".join(f"{k.name}: {k.summary}" for k in KINDS.values()), name="model", choices=tuple(KINDS)
    )
    vocab_size: int = 27  # not an option: the data's
    label_sizes: tuple[int, ...] = ()  # not an option: each label column's values and unknown (labels.py)
    positions: int | None = None  # not an option: a positional kind's, the data's longest item + 1
    n_embd: int = option(24, "embedding size")
    n_hidden: int = option(128, "hidden units per layer (gru: its state's size)")
    n_layers: int = option(3, "tree levels: a context of 2**n-layers characters (transformer: its blocks)")
    block_size: int | None = option(None, "context length (the trees see 2**n-layers characters)")
    n_head: int = option(4, "attention heads; n-embd must be a multiple of it")
    batchnorm_bug: bool = option(False, "the lecture's batch-norm bug: statistics over the batch dimension only")
    # the parts of a full WaveNet block (see wavenet.Blocks); the defaults are the lecture's tree
    gated: bool = option(Blocks.gated, "tanh(W_f x) * sigmoid(W_g x) units")
    residual: bool = option(Blocks.residual, "residual 1x1 connections")
    skip: bool = option(Blocks.skip, "the head reads the sum of skip connections")
    cycles: int = option(Blocks.cycles, "repeat the dilations 1, 2, ... this many times")
    dropout: float = option(
        Blocks.dropout, "dropout on each layer's activation (transformer: GPT-2's, on embeddings, attention, branches)"
    )
    norm: str = option(Blocks.norm, "normalisation", choices=NORMS)
    label_dropout: float = option(
        0.1,
        "with labels: the chance that training hides each label (as unknown), so "
        "that a model also predicts, and samples, with any label left out",
    )

    def __post_init__(self):
        self.label_sizes = tuple(self.label_sizes)  # (a list, from JSON)
        check_choices(self)
        if not 0.0 <= self.label_dropout < 1.0:
            raise OptionError("label_dropout", f"must be in [0, 1), got {self.label_dropout}")
        if self.label_sizes and not KINDS[self.kind].conditional:
            takers = " and ".join(k.name for k in KINDS.values() if k.conditional)
            raise OptionError(
                "kind", f"{self.kind} takes no labels ({takers} do): train it with --no-labels, on the items alone"
            )
        check_at_least(self, 1, "vocab_size", "n_embd", "n_hidden", "n_layers", "block_size", "n_head", "positions")
        defaults = ModelConfig.__dataclass_fields__
        for other in KINDS.values():
            for name in other.options:
                if other.name != self.kind and getattr(self, name) != defaults[name].default:
                    raise OptionError(name, f"is an option of the {other.name} model, not of {self.kind}")
        for name in KINDS[self.kind].unused:
            if getattr(self, name) != defaults[name].default:
                raise OptionError(name, f"does not apply to the {self.kind} model, which does not read it")
        self.blocks()  # its own checks

    def blocks(self) -> Blocks:
        return Blocks(self.gated, self.residual, self.skip, self.cycles, self.dropout, self.norm)


def kind_config(kind: str, **options) -> ModelConfig:
    """A ModelConfig of `kind` with that kind's defaults under the options given (field names)."""
    sizes = KINDS[kind].sizes if kind in KINDS else {}  # an unknown kind: ModelConfig says which there are
    return ModelConfig(kind=kind, **{**sizes, **options})


def build_model(config: ModelConfig) -> nn.Module:
    if KINDS[config.kind].positional and config.positions is None:
        raise ValueError(f"a {config.kind} model needs positions, the data's longest item + 1 (see runs.sized_for)")
    return KINDS[config.kind].build(config)


def kind_of(model: nn.Module) -> Kind:
    """The registered kind of a model object (of an Ensemble, its members')."""
    if isinstance(model, Ensemble):
        model = model.members[0]
    for kind in KINDS.values():
        if isinstance(model, kind.model):
            return kind
    raise TypeError(f"{type(model).__name__} is not a registered kind of model ({', '.join(KINDS)})")


def batches_for(
    model: nn.Module,
    words: list[str],
    vocab: Vocab,
    device: str | torch.device = "cpu",
    labels: torch.Tensor | None = None,
):
    """`words` as the batches that `model` trains and is evaluated on (NameBatches or WindowBatches);
    labels (N, K): the words' labels, for a conditional model."""
    return kind_of(model).layout(words, vocab, model.block_size, device, labels)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
