"""Self-contained checkpoints: everything `sample`, `evaluate` and `--resume` need, in one file.

A checkpoint is a dict of plain values and tensors, loaded with weights_only=True (no pickled code),
and written atomically (files.replace): a crash, a SIGKILL or Ctrl-C mid-write leaves the previous
file as it was.
"""

import pickle
from pathlib import Path

import torch
from torch import nn

from . import files
from .ensemble import Ensemble
from .labels import LabelColumns
from .models import ModelConfig, build_model
from .words import Vocab

FORMAT = "wavenet_names.checkpoint/1"


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint: the message names the file and the problem."""


def save_checkpoint(checkpoint: dict, path: str | Path) -> None:
    with files.replace(path, durable=True) as tmp:
        torch.save({"format": FORMAT, **checkpoint}, tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The checkpoint in `path`: a file, or a run's directory, whose model.pt it reads."""
    path = Path(path)
    if path.is_dir():
        if not (path / "model.pt").is_file():
            raise CheckpointError(f"{path}: a directory without a model.pt; pass a checkpoint file")
        path = path / "model.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # torch's own refusal, a paragraph long: objects only running code rebuilds
        raise CheckpointError(f"{path}: not a wavenet_names checkpoint (it holds objects other than tensors and "
                              "plain values)") from None  # fmt: skip
    except Exception:  # torch.load fails in many ways on foreign bytes (KeyError, EOFError, IndexError, ...)
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated, or not a file that wavenet-names wrote)"
        ) from None
    if not isinstance(checkpoint, dict) or "format" not in checkpoint:
        raise CheckpointError(f"{path}: not a wavenet_names checkpoint")
    if checkpoint["format"] != FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {checkpoint['format']!r}, this version reads {FORMAT!r}")
    return checkpoint


def ensemble_checkpoint(members: list[dict], train_config: dict) -> dict:
    """One checkpoint of several runs' models (their model.pt, of one model config and one data file),
    for load_model to rebuild as one Ensemble; train_config is the ensemble's own (its `members`)."""
    first = members[0]
    return {
        "model_config": first["model_config"],
        "train_config": train_config,
        "vocab": first["vocab"],
        "data_fingerprint": first["data_fingerprint"],
        **{key: first[key] for key in ("train_words", "held_out_words", "seen_in_data") if key in first},
        "labels": first.get("labels"),
        "members": [member["model"] for member in members],  # one state dict per model
    }


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Vocab, dict]:
    """The trained model a checkpoint holds, rebuilt on `device` in eval mode (an Ensemble for an
    ensemble's checkpoint), with its vocabulary and the checkpoint itself (its configs, and the
    training words `sample` marks)."""
    checkpoint = load_checkpoint(path, map_location=device)
    try:
        config = ModelConfig.from_saved(checkpoint["model_config"])
        states = checkpoint["members"] if "members" in checkpoint else [checkpoint["model"]]
        models = [build_model(config).to(device) for _ in states]
        for model, state in zip(models, states, strict=True):
            model.load_state_dict(state)
        model = Ensemble(models) if "members" in checkpoint else models[0]
        vocab = Vocab(tuple(checkpoint["vocab"]))
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: incomplete or incompatible checkpoint ({type(e).__name__}: {e})") from None
    return model.eval(), vocab, checkpoint


def load_models(paths: list[str | Path], device: str | torch.device = "cpu") -> tuple[nn.Module, Vocab, dict]:
    """load_model() of one checkpoint; of several, their models as one Ensemble (an ensemble's
    checkpoint among them adds its models, flat: every model weighs the same), with the first's
    vocabulary and checkpoint. The models of an ensemble must share their vocabulary and the data
    they trained on."""
    loaded = [load_model(path, device) for path in paths]
    model, vocab, checkpoint = loaded[0]
    if len(loaded) == 1:
        return model, vocab, checkpoint
    for path, (_, other_vocab, other) in zip(paths[1:], loaded[1:], strict=True):
        if other_vocab != vocab:
            raise ValueError(
                f"--checkpoint {path}: its characters differ from {paths[0]}'s; an ensemble needs one vocabulary"
            )
        if other.get("data_fingerprint") != checkpoint.get("data_fingerprint"):
            raise ValueError(
                f"--checkpoint {path}: trained on other data than {paths[0]}; an ensemble's models "
                "must share their split, or one's training names are another's validation"
            )
    models = [one for m, _, _ in loaded for one in (m.members if isinstance(m, Ensemble) else [m])]
    try:
        return Ensemble(models), vocab, checkpoint
    except ValueError as e:
        raise ValueError(f"--checkpoint: {e}") from None


def label_columns(checkpoint: dict) -> LabelColumns | None:
    """The label columns of a conditional model's checkpoint; None for a model without labels (and
    for a checkpoint of a version before labels)."""
    saved = checkpoint.get("labels")
    return LabelColumns.from_saved(saved) if saved else None
