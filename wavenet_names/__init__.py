"""wavenet_names: makemore part 5's hierarchical "WaveNet" as a fast, tested convolutional model.

The names below are imported when first used, not with the package: the sampler of exported models
(wavenet_names.portable) runs where PyTorch is not installed, and importing it must not import torch.
"""

import importlib

__version__ = "0.1.0"

_PUBLIC = {  # name: the module that defines it
    "CheckpointError": "checkpoint",
    "load_model": "checkpoint",
    "conv_from_tree": "conversion",
    "tree_from_conv": "conversion",
    "NAMES_BY_DECADE": "data",
    "NAMES_TXT": "data",
    "encode_names": "data",
    "pad_batch": "data",
    "split_words": "data",
    "windows": "data",
    "DataError": "words",
    "Vocab": "words",
    "read_words": "words",
    "Ensemble": "ensemble",
    "LabelColumns": "labels",
    "read_items": "labels",
    "BatchNorm": "layers",
    "FlattenConsecutive": "layers",
    "FlatMLP": "mlp",
    "HierarchicalMLP": "mlp",
    "KINDS": "models",
    "ModelConfig": "models",
    "build_model": "models",
    "count_params": "models",
    "register": "models",
    "SampleConfig": "choosing",
    "generate": "sampling",
    "score": "scoring",
    "Blocks": "wavenet",
    "ConvWaveNet": "wavenet",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
