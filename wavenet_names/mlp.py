"""The lecture's per-position models: every window of block_size characters is run on its own.

- FlatMLP: the lecture's baseline (Bengio et al. 2003): all block_size embeddings in one Linear.
- HierarchicalMLP: the lecture's "WaveNet" tree: pairs, pairs of pairs, ...

Both follow the package's contract, forward(idx, targets=None, labels=None) -> (logits, loss), with
-1 targets ignored by the loss; HierarchicalMLP can be conditioned on labels, as ConvWaveNet. Both
also run over every window of a longer row, forward_full, as ConvWaveNet does: what sampling by
windows calls.
"""

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from .batches import WindowBatches
from .kinds import CharacterRows, Kind
from .layers import BatchDimOnlyBatchNorm, BatchNorm, FlattenConsecutive, LabelEmbedding, init_lecture, label_vectors
from .losses import language_model_loss
from .options import check_at_least, check_fraction, option
from .splits import Facts

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


def over_windows(model: nn.Module, idx: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """A per-position model's logits for every window of block_size columns of idx (B, T): (B, T -
    block_size + 1, vocab), output j having read idx[:, j : j + block_size]. labels (B, K): each row's."""
    B, T = idx.shape
    if T < model.block_size:
        raise ValueError(f"idx needs at least block_size={model.block_size} columns, got {T}")
    windows = idx.unfold(1, model.block_size, 1)  # (B, n, block_size)
    n = windows.shape[1]
    labels = None if labels is None else labels.repeat_interleave(n, 0)  # (B * n, K): a row's for each window
    logits, _ = model(windows.reshape(B * n, -1), labels=labels)  # (B * n, vocab)
    return logits.view(B, n, -1)


class FlatMLP(nn.Module):
    """Embedding, flatten all block_size embeddings, Linear (no bias), BatchNorm, Tanh, Linear."""

    def __init__(self, vocab_size: int, n_embd: int, n_hidden: int, block_size: int):
        super().__init__()
        self.block_size = block_size
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.hidden = nn.Sequential(
            nn.Linear(block_size * n_embd, n_hidden, bias=False), BatchNorm(n_hidden), nn.Tanh()
        )
        self.lm_head = nn.Linear(n_hidden, vocab_size)
        init_lecture(self)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, labels: torch.Tensor | None = None):
        label_vectors(None, labels, len(idx), idx.device)  # it takes no labels: refuses any
        x = rearrange(self.wte(idx), "b t c -> b (t c)")  # (B, block_size * n_embd)
        logits = self.lm_head(self.hidden(x))  # (B, vocab)
        return logits, language_model_loss(logits, targets)

    def forward_full(self, idx: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return over_windows(self, idx, labels)


class HierarchicalMLP(nn.Module):
    """The lecture's tree, evaluated for each window on its own: block_size = 2**n_layers characters
    are fused in pairs, then pairs of pairs, ..., by n_layers [FlattenConsecutive(2), Linear, BatchNorm,
    Tanh] layers. A window costs 2**n_layers - 1 node evaluations; see ConvWaveNet for the shared way.

    label_sizes: global conditioning, as ConvWaveNet's: the window's labels (B, K) embedded as one
    vector h, and V_i h added to every node of level i before its BatchNorm."""

    def __init__(
        self,
        vocab_size: int,
        n_embd: int,
        n_hidden: int,
        n_layers: int,
        batchnorm_bug: bool = False,
        label_sizes: tuple[int, ...] = (),
        label_dropout: float = 0.0,
    ):
        super().__init__()
        self.block_size = 2**n_layers
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.labels = LabelEmbedding(label_sizes, n_embd, label_dropout) if label_sizes else None
        self.conditions = (  # WaveNet's V, one per level
            nn.ModuleList(nn.Linear(self.labels.dim, n_hidden, bias=False) for _ in range(n_layers))
            if self.labels is not None
            else None
        )
        self.tree = nn.ModuleList(
            nn.Sequential(
                FlattenConsecutive(2),
                nn.Linear(2 * (n_embd if i == 0 else n_hidden), n_hidden, bias=False),
                BatchDimOnlyBatchNorm(n_hidden, positions=2 ** (n_layers - i - 1))
                if batchnorm_bug
                else BatchNorm(n_hidden),
                nn.Tanh(),
            )
            for i in range(n_layers)
        )
        self.lm_head = nn.Linear(n_hidden, vocab_size)
        init_lecture(self)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, labels: torch.Tensor | None = None):
        """idx (B, block_size) windows, targets (B,) or None, labels (B, K) or None (all unknown)."""
        h_labels = label_vectors(self.labels, labels, len(idx), idx.device)  # (B, n_label), or None
        x = self.wte(idx)  # (B, block_size, n_embd)
        for i, (flatten, linear, norm, tanh) in enumerate(self.tree):
            x = linear(flatten(x))  # (B, T/2, n_hidden), and (B, n_hidden) at the top
            if h_labels is not None:
                condition = self.conditions[i](h_labels)  # (B, n_hidden)
                x = x + (condition[:, None] if x.ndim == 3 else condition)
            x = tanh(norm(x))
        logits = self.lm_head(x)  # (B, vocab)
        return logits, language_model_loss(logits, targets)

    def forward_full(self, idx: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return over_windows(self, idx, labels)


@dataclass(frozen=True)
class FlatOptions:
    """The flat MLP's options; the defaults are the lecture's first MLP."""

    n_embd: int = option(10, "embedding size")
    n_hidden: int = option(200, "hidden units of its one layer")
    block_size: int = option(3, "context length: the characters it reads, all in one layer")

    def __post_init__(self):
        check_at_least(self, 1, "n_embd", "n_hidden", "block_size")


@dataclass(frozen=True)
class HierarchicalOptions:
    """The lecture's tree's options; the defaults are its final one (76,579 parameters)."""

    n_embd: int = option(24, "embedding size")
    n_hidden: int = option(128, "hidden units per layer")
    n_layers: int = option(3, "tree levels: a context of 2**n-layers characters")
    batchnorm_bug: bool = option(False, "the lecture's batch-norm bug: statistics over the batch dimension only")
    label_dropout: float = option(
        0.1, "with labels: the chance that training hides each label (as unknown), as conv's --label-dropout"
    )

    def __post_init__(self):
        check_at_least(self, 1, "n_embd", "n_hidden", "n_layers")
        check_fraction(self, "label_dropout")


def build_flat(options: FlatOptions, facts: Facts) -> FlatMLP:
    return FlatMLP(facts.vocab_size, options.n_embd, options.n_hidden, options.block_size)


def build_hierarchical(options: HierarchicalOptions, facts: Facts) -> HierarchicalMLP:
    o = options
    return HierarchicalMLP(
        facts.vocab_size, o.n_embd, o.n_hidden, o.n_layers, o.batchnorm_bug, facts.label_sizes, o.label_dropout
    )


HIERARCHICAL = Kind(
    name="hierarchical",
    summary="the lecture's tree, run once per position, trained with the lecture's recipe",
    model=HierarchicalMLP,
    options=HierarchicalOptions,
    build=build_hierarchical,
    batches=WindowBatches,
    recipe=LECTURE_RECIPE,
    conditional=True,
    character_rows=CharacterRows(),
)
FLAT = Kind(
    name="flat",
    summary="the lecture's first MLP over a fixed context, trained with the lecture's recipe",
    model=FlatMLP,
    options=FlatOptions,
    build=build_flat,
    batches=WindowBatches,
    recipe=LECTURE_RECIPE,
    character_rows=CharacterRows(),
)
