"""The models' shared configuration: what a checkpoint needs to rebuild any of them.

- FlatMLP, HierarchicalMLP (mlp.py): the lecture's per-position models.
- ConvWaveNet (wavenet.py): the lecture's tree as dilated convolutions over whole names.

One contract for all: forward(idx, targets=None) -> (logits, loss), targets of -1 ignored.
"""

from dataclasses import dataclass

from torch import nn

from .mlp import FlatMLP, HierarchicalMLP
from .wavenet import Blocks, ConvWaveNet, receptive_field

MODELS = {"conv": ConvWaveNet, "hierarchical": HierarchicalMLP, "flat": FlatMLP}


@dataclass
class ModelConfig:
    """What a checkpoint needs to rebuild a model. block_size is the context length for `flat`;
    the tree models see 2**n_layers characters."""

    kind: str = "conv"  # conv | hierarchical | flat
    vocab_size: int = 27
    n_embd: int = 24
    n_hidden: int = 128
    n_layers: int = 3
    block_size: int | None = None  # flat only; None means 2**n_layers
    batchnorm_bug: bool = False  # hierarchical only: the lecture's batch-dimension-only statistics
    # conv only, the parts of a full WaveNet block (see wavenet.Blocks); the defaults are the lecture's
    gated: bool = False
    residual: bool = False
    skip: bool = False
    cycles: int = 1
    dropout: float = 0.0
    norm: str = "batch"

    def __post_init__(self):
        if self.kind not in MODELS:
            raise ValueError(f"model kind must be one of {', '.join(MODELS)}, got {self.kind!r}")
        for name in ("vocab_size", "n_embd", "n_hidden", "n_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.block_size is not None and self.block_size < 1:
            raise ValueError(f"block-size must be at least 1, got {self.block_size}")
        if self.batchnorm_bug and self.kind != "hierarchical":
            raise ValueError("the lecture's batch-norm bug is an option of the hierarchical model only")
        if not self.blocks().lecture and self.kind != "conv":
            raise ValueError(
                "--gated, --residual, --skip, --cycles, --dropout and --norm are options of the conv model"
            )

    def blocks(self) -> Blocks:
        return Blocks(self.gated, self.residual, self.skip, self.cycles, self.dropout, self.norm)

    @property
    def context(self) -> int:
        """How many characters the model sees before the one it predicts."""
        if self.kind == "flat" and self.block_size is not None:
            return self.block_size
        return receptive_field(self.n_layers, self.cycles)


def build_model(config: ModelConfig) -> nn.Module:
    if config.kind == "flat":
        return FlatMLP(config.vocab_size, config.n_embd, config.n_hidden, config.context)
    if config.kind == "hierarchical":
        return HierarchicalMLP(config.vocab_size, config.n_embd, config.n_hidden, config.n_layers, config.batchnorm_bug)
    return ConvWaveNet(config.vocab_size, config.n_embd, config.n_hidden, config.n_layers, config.blocks())


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
