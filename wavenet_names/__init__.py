"""wavenet_names: makemore part 5's hierarchical "WaveNet" as a fast, tested convolutional model."""

from .checkpoint import CheckpointError, load_model
from .conversion import conv_from_tree, tree_from_conv
from .data import (
    NAMES_BY_DECADE,
    NAMES_TXT,
    DataError,
    Vocab,
    encode_names,
    pad_batch,
    read_words,
    split_words,
    windows,
)
from .ensemble import Ensemble
from .labels import LabelColumns, read_items
from .layers import BatchNorm, FlattenConsecutive
from .mlp import FlatMLP, HierarchicalMLP
from .models import KINDS, ModelConfig, build_model, count_params, register
from .sampling import SampleConfig, generate
from .scoring import score
from .wavenet import Blocks, ConvWaveNet

__version__ = "0.1.0"
