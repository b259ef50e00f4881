"""A trained model loaded for use, as `sample`, `score`, `evaluate` and `serve` use it: the model (or
several as one ensemble), its vocabulary, its label columns, and the items it was trained on, by
split, which its samples are marked against."""

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from torch import nn

from . import shipped
from .checkpoint import label_columns, load_models
from .choosing import SampleConfig, Sampled, default_cut_at
from .labels import LabelColumns, parse_labels
from .sampling import sampler
from .splits import Splits
from .words import DataError, Seen, Vocab, training_data


@dataclass
class LoadedModel:
    model: nn.Module  # in eval mode
    vocab: Vocab
    checkpoint: dict  # the first checkpoint's: its configs, its data, the names of its splits
    names: str  # the checkpoints, as given, for messages
    joined: bool = False  # several checkpoints, as one ensemble

    @classmethod
    def load(cls, given: list[str | Path] | tuple = (), device: str | torch.device = "cpu") -> "LoadedModel":
        """The model of the checkpoints given (paths, run directories, shipped models' names; several:
        one ensemble); none given, the model `train` wrote, or the shipped one (shipped.checkpoints)."""
        paths = shipped.checkpoints(given)
        model, vocab, checkpoint = load_models(paths, device)
        return cls(model, vocab, checkpoint, ", ".join(map(str, paths)), joined=len(paths) > 1)

    @cached_property  # the server gives it at every /api/model: trained.json read once
    def val(self) -> float | None:
        """Its val loss as recorded when it was trained: a run's best, or a shipped model's (trained.json);
        None for several checkpoints joined here as one, or a checkpoint that records none."""
        if self.joined:
            return None
        if self.checkpoint.get("dataset"):  # a shipped model's
            return shipped.record().get(Path(self.names).stem, {}).get("val_loss")
        return self.checkpoint.get("best_val_loss")

    @property
    def title(self) -> str:
        """What it is called: its checkpoints, or the shipped model's name."""
        return f"the shipped model {Path(self.names).stem}" if self.checkpoint.get("dataset") else self.names

    def origin(self) -> str:
        """Which model this is, with its val, in words: what a command says of the model it chose."""
        val = "" if self.val is None else f" (val {self.val:.4f})"
        if self.checkpoint.get("dataset"):
            return f"{self.title}{val}; train one of your own with: wavenet-names train"
        return f"{self.title}{val}, the model train wrote there; --checkpoint names for the shipped one"

    @cached_property
    def seen(self) -> Seen:
        """The items of each split of its data, which samples are marked against: the checkpoint's, or
        for a list too large to keep in it, its data file's, read again if it is there and the same.
        Otherwise none, and its `missing` says why."""
        seen = Seen.of_checkpoint(self.checkpoint)
        if seen is not None:
            return seen
        columns = self.columns
        try:
            splits = Splits.read(self.data, self.vocab, columns, use_labels=columns is not None)
        except (DataError, OSError) as e:
            return _unmarked(f"its data file cannot be read ({e})")
        if splits.fingerprint != self.data_fingerprint:
            return _unmarked(f"{self.data} is not the data it was trained on any more")
        return splits.seen

    @cached_property  # read at every request the server takes: made once
    def columns(self) -> LabelColumns | None:
        """A conditional model's label columns; None for a model without labels."""
        return label_columns(self.checkpoint)

    @cached_property  # a pass over every training item: once, not at each request
    def cut_at(self) -> int:
        """Where a sample is cut by default: 64 characters, or the longest item it trained on."""
        return default_cut_at(self.seen.train)

    @property
    def data(self) -> str:
        """The data file it was trained on."""
        return training_data(self.checkpoint)

    @property
    def data_fingerprint(self) -> str | None:
        """Of the items of the data it was trained on, in their order (splits.fingerprint)."""
        return self.checkpoint.get("data_fingerprint")

    def labels(self, given: list[str] | tuple[str, ...], what: str = "--label") -> torch.Tensor | None:
        """Labels as "column=value" (K,), unknown where not given; None for a model without labels,
        which refuses any. `what` names them in errors (the server's "labels")."""
        parsed = parse_labels(self.columns, given, what)
        return None if parsed is None else torch.from_numpy(parsed)

    def sampler(self, config: SampleConfig, labels: torch.Tensor | None = None):
        """sampling.sampler's draw(n) for this model: names drawn with config, each with these labels."""
        return sampler(self.model, self.vocab, config, labels=labels)

    def label_values(self, labels: torch.Tensor | None) -> dict[str, str]:
        """(K,) label numbers as {column: value}, leaving out the unknown ones."""
        if labels is None:
            return {}
        columns = self.columns
        return {columns.names[k]: columns.values[k][int(v) - 1] for k, v in enumerate(labels) if int(v) > 0}

    def mark(self, sampled: Sampled) -> str:
        """ "*": of the training split; "+": of val or test; "": new; "cut": a name the model did not end."""
        return self.seen.mark_sampled(sampled)


def _unmarked(why: str) -> Seen:
    missing = f"names are not marked * or +: {why}, and the checkpoint keeps no names of a list so large"
    return Seen(frozenset(), frozenset(), missing)
