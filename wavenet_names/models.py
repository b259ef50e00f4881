"""Every kind of model, registered once, and ModelConfig, what a checkpoint needs to rebuild a model.

Each kind is declared in its own module, beside its class (kinds.Kind): wavenet.py, mlp.py (the
lecture's two per-position models), transformer.py and gru.py. This module registers them, in the
order that --help lists them, and answers the questions the rest of the package asks of a model:
its kind, how to build it, how a split is fed to it.

A kind from outside the package is registered with register() by the program that imports its
module; or, to reach the `wavenet-names` command, its distribution names its Kind as an entry point
of the group "wavenet_names.kinds", which this module registers:

    [project.entry-points."wavenet_names.kinds"]
    bigram = "my_package.bigram:KIND"
"""

from dataclasses import asdict, dataclass, fields
from importlib.metadata import entry_points

import torch
from torch import nn

from . import gru, mlp, transformer, wavenet
from .ensemble import Ensemble
from .kinds import Kind
from .options import OptionError, listing, options_of
from .splits import Facts, Splits

KINDS: dict[str, Kind] = {}  # by name, in the order registered: what --model takes


def register(kind: Kind) -> Kind:
    """Make `kind` known to every part of the package: training, sampling, serving, the command line
    and the experiments. Its name must be new."""
    if kind.name in KINDS:
        raise ValueError(f"a kind of model named {kind.name!r} is registered already")
    KINDS[kind.name] = kind
    return kind


for _kind in (wavenet.KIND, mlp.HIERARCHICAL, mlp.FLAT, transformer.KIND, gru.KIND):
    register(_kind)
for _plugin in entry_points(group="wavenet_names.kinds"):
    register(_plugin.load())


def kind_named(name: str) -> Kind:
    """The kind registered as `name`; OptionError naming those there are."""
    if name not in KINDS:
        raise OptionError("model", f"must be one of {listing(list(KINDS))}, got {name!r}")
    return KINDS[name]


def kind_of(model: nn.Module) -> Kind:
    """The registered kind of a model object (of an Ensemble, its members')."""
    if isinstance(model, Ensemble):
        model = model.members[0]
    for kind in KINDS.values():
        if isinstance(model, kind.model):
            return kind
    raise TypeError(f"{type(model).__name__} is not a registered kind of model ({', '.join(KINDS)})")


@dataclass(frozen=True)
class ModelConfig:
    """What a checkpoint needs to rebuild a model: its kind, the facts taken from its data, and the
    kind's own options (an instance of its Kind.options; None: the kind's defaults)."""

    kind: str = "conv"
    facts: Facts = Facts()
    options: object = None

    def __post_init__(self):
        kind = kind_named(self.kind)
        if self.options is None:
            object.__setattr__(self, "options", kind.options())
        elif not isinstance(self.options, kind.options):
            raise TypeError(f"a {self.kind} model's options are {kind.options.__name__}, got {self.options!r}")
        if self.facts.label_sizes and not kind.conditional:
            takers = listing([k.name for k in KINDS.values() if k.conditional])
            raise OptionError(
                "model", f"{self.kind} takes no labels ({takers} do): train it with --no-labels, on the items alone"
            )

    @classmethod
    def of(cls, kind: str = "conv", facts: Facts | None = None, **options) -> "ModelConfig":
        """A `kind` model with these options (by field name) over the kind's defaults; an option the
        kind does not read is refused in one line that names those it does."""
        return cls(kind, facts or Facts(), options_of(kind_named(kind).options, f"the {kind} model", options))

    def saved(self) -> dict:
        """As a checkpoint and metrics.json hold it: one flat mapping of plain values."""
        return {"kind": self.kind, **asdict(self.facts), **asdict(self.options)}

    @classmethod
    def from_saved(cls, saved: dict) -> "ModelConfig":
        """What saved() wrote, or what a version before each kind owned its options wrote: every kind's
        options in one mapping (those of other kinds are not this kind's, and are left), and a
        positional kind's `positions` (its longest item + 1)."""
        kind = kind_named(saved.get("kind", "conv"))
        longest = saved.get("longest", saved["positions"] - 1 if saved.get("positions") else None)
        facts = Facts(saved.get("vocab_size", Facts.vocab_size), tuple(saved.get("label_sizes", ())), longest)
        own = {f.name: saved[f.name] for f in fields(kind.options) if f.name in saved}
        return cls(kind.name, facts, kind.options(**own))

    def sized_for(self, splits: Splits) -> "ModelConfig":
        """This config with the facts of `splits`' data: its vocabulary, label columns and longest item."""
        return ModelConfig(self.kind, splits.facts, self.options)


def build_model(config: ModelConfig) -> nn.Module:
    kind = kind_named(config.kind)
    missing = [name for name in kind.needs if getattr(config.facts, name) is None]
    if missing:
        raise ValueError(f"a {kind.name} model needs its data's {listing(missing)} (see ModelConfig.sized_for)")
    return kind.build(config.options, config.facts)


def batches_for(model: nn.Module, splits: Splits, split: str, device: str | torch.device = "cpu"):
    """One split ("train", "val", "test" or "all") of `splits` as the batches that `model` trains and
    is evaluated on (its kind's NameBatches or WindowBatches)."""
    words, labels = splits.words(split), splits.labels(split)
    return kind_of(model).batches(words, splits.vocab, model.block_size, device, labels)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
