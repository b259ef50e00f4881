"""Trained models that come with the package, so that `sample` gives names before any training.

Each is a student of the default model's size (76,579 parameters without labels), distilled from
`--preset max`'s six-model ensemble on one of the shipped data files: "names" on data/names.txt, and
"names-by-decade" on data/names-by-decade.tsv, conditioned on sex and decade. The same size as the
default `train`'s model, so it samples as fast, but closer to the ensemble (distill.py).
`wavenet-names ship` trains the teachers and the students again and writes the students here, into
wavenet_names/trained/, with trained.json beside them: each model's train and val loss, as evaluated
when it was written (a test evaluates each again and compares), and how it was made. A shipped
checkpoint keeps what sampling, evaluation and scoring read, not what --resume would (the
optimizer's state): each is under 1 MB.

`--checkpoint names-by-decade` (a name, not a path) picks one; sample, evaluate, score and serve
without a --checkpoint read out/model.pt if `train` wrote one there, and the shipped "names"
otherwise (checkpoints). experiments.ship trains them.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import CheckpointError
from .data import NAMES_BY_DECADE, NAMES_TXT

DIRECTORY = Path(__file__).resolve().parent / "trained"  # in the package: a wheel carries it
RECORD = "trained.json"  # beside the models: how each was made, and its losses
DEFAULT = "names"  # what sample reads when there is no --checkpoint and no out/model.pt
TRAINED = Path("out/model.pt")  # what `train` writes by default: read before the shipped model, if it is there


@dataclass(frozen=True)
class ShippedModel:
    name: str  # what --checkpoint takes
    data: Path  # a shipped data file (data.shipped)
    description: str


SHIPPED = {
    model.name: model
    for model in [
        ShippedModel(
            "names",
            NAMES_TXT,
            "the default model distilled from --preset max on data/names.txt: 32,469 US baby names of 2017",
        ),
        ShippedModel(
            "names-by-decade",
            NAMES_BY_DECADE,
            "the default model distilled from --preset max on data/names-by-decade.tsv, conditioned on sex "
            "and decade (sample --label)",
        ),
    ]
}


def path_of(name: str, directory: Path | None = None) -> Path:
    return (directory or DIRECTORY) / f"{name}.pt"


def resolve(spec: str | Path) -> Path:
    """A --checkpoint as given: a path that exists, or the name of a shipped model."""
    path = Path(spec)
    if path.exists() or str(spec) not in SHIPPED:
        return path
    if not path_of(str(spec)).is_file():  # a source checkout before `wavenet-names ship` ran
        raise CheckpointError(f"--checkpoint {spec}: the shipped model is missing; wavenet-names ship rebuilds it")
    return path_of(str(spec))


def record(directory: Path | None = None) -> dict:
    """trained.json: for each shipped model, its recipe and the losses it was written with."""
    return json.loads(((directory or DIRECTORY) / RECORD).read_text(encoding="utf-8"))


def slim(checkpoint: dict, data: Path) -> dict:
    """What sampling, evaluation and scoring read of a run's model.pt: its model, configs and vocabulary,
    and the sets of names its novelty marks look up, each name once (a table names a name in many rows).
    The data file is recorded by its shipped name (`dataset`), found wherever the package is installed."""
    train = sorted(set(checkpoint["train_words"].split("\n")))
    held_out = sorted(set(checkpoint["held_out_words"].split("\n")) - set(train))
    keep = ("model_config", "train_config", "vocab", "data_fingerprint", "labels", "model")
    slimmed = {key: checkpoint[key] for key in keep if key in checkpoint}
    train_config = {**checkpoint["train_config"], "data": data.name}
    words = {"train_words": "\n".join(train), "held_out_words": "\n".join(held_out)}
    return {**slimmed, "train_config": train_config, "dataset": data.name, **words}


def checkpoints(given: list[str | Path] | tuple = ()) -> list[Path]:
    """The checkpoints that --checkpoint names (paths, run directories, or shipped models' names);
    without one, the model that `train` wrote (out/model.pt), or before any training the shipped one."""
    given = list(given) or [TRAINED if TRAINED.exists() else DEFAULT]
    return [resolve(spec) for spec in given]
