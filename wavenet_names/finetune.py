"""Starting from a trained model: `train --init MODEL` trains on a new list from a trained model's
weights (a checkpoint, a run's directory, or a shipped model's name) instead of from nothing.

A model trained on 32,469 names knows most of what a new list needs: which letters follow which, how
names end, how long they run. The fine-tune keeps the base's model options and its vocabulary, and
adds what the list brings:
- characters the base never saw become new rows of the embedding and the head (a kind's
  Kind.character_rows names those tensors). A new character's embedding is the mean of the known ones,
  and its head row is zero with a bias of NEW_LOGIT, so that at step 0 it takes next to none of any
  prediction: the known characters' predictions do not move (tests/test_finetune.py);
- label columns other than the base's start new: their embeddings, and every tensor that conditions
  on them, are the fresh model's own.
"""

from collections.abc import Iterable
from dataclasses import fields, replace
from pathlib import Path

import torch

from . import shipped
from .checkpoint import CheckpointError, load_checkpoint
from .configuration import TrainConfig, settings, train_options
from .kinds import CharacterRows
from .labels import LabelColumns
from .models import ModelConfig, build_model, kind_named, kind_of
from .splits import Splits
from .words import Vocab

# A fine-tune's own recipe, under the options given, chosen on val over five short lists
# (docs/experiments.md): the base's last rate, not its peak (lr 1e-3 lost on four lists of five), a
# little dropout (without it, a list with new characters stopped before learning them: 1.9975 against
# 1.8721 on faker's German names), and evaluations every 50 steps with a patience of 4: a short list's
# best model comes in its first 200 steps, and then the list is learnt by heart.
RECIPE = dict(lr=3e-4, dropout=0.1, eval_every=50, patience=4)
OPEN = frozenset({"dropout", "label_dropout"})  # model options a fine-tune may change: no weight's shape

# A new character's logit at step 0, whatever the context: e^-20 of the mass beside the known
# characters' logits, whose log-sum-exp is 3 to 11 for the shipped model on data/names.txt.
NEW_LOGIT = -20.0


class InitError(ValueError):
    """A base that cannot start this run: the message names it and why."""


def base_checkpoint(spec: str | Path) -> dict:
    """The checkpoint --init names: a file, a run's directory (its model.pt), or a shipped model."""
    try:
        checkpoint = load_checkpoint(shipped.resolve(spec))
    except CheckpointError as e:
        raise InitError(f"--init: {e}") from None
    if "members" in checkpoint:
        member = Path(spec) / "member-1" / "model.pt"
        raise InitError(
            f"--init {spec}: an ensemble of {len(checkpoint['members'])} models, and a fine-tune starts from "
            f"one model; pass one of its members' checkpoints, such as {member}"
        )
    return checkpoint


def fine_tune_settings(
    checkpoint: dict, options: dict, preset: str | None, spec: str | Path
) -> tuple[ModelConfig, TrainConfig]:
    """A fine-tune's configs: the base's model, with the options given that change no weight's shape
    (OPEN); training options as any run's; both over RECIPE (what of it the base's kind reads), over
    the kind's own. Other model options, a preset and another kind are refused in one line."""
    base = ModelConfig.from_saved(checkpoint["model_config"])
    if preset is not None:
        raise InitError(f"--init {spec}: a fine-tune trains the base's model; it takes no --preset")
    if options.get("model", base.kind) != base.kind:
        raise InitError(f"--init {spec}: the base is a {base.kind} model, not a {options['model']} one")
    model_options = set(options) - train_options() - {"model"}
    refused = sorted(model_options - OPEN)
    if refused:
        flags = ", ".join("--" + name.replace("_", "-") for name in refused)
        raise InitError(f"--init {spec}: a fine-tune keeps the base's model options, so {flags} cannot be given "
                        f"(of the model's options, only --dropout and --label-dropout can)")  # fmt: skip
    its_own = {f.name for f in fields(base.options)}
    reads = train_options() | its_own
    recipe = {**{name: value for name, value in RECIPE.items() if name in reads}, **options, "model": base.kind}
    _, config = settings(recipe)  # also refuses what the base's kind does not read
    changed = {name: value for name, value in recipe.items() if name in its_own}
    return ModelConfig(base.kind, base.facts, replace(base.options, **changed)), config


def grown_vocab(checkpoint: dict, items: Iterable[str], spec: str | Path) -> Vocab:
    """The base's vocabulary, then the characters of `items` (a list's items, or its characters) it does
    not know, sorted: the known characters keep their numbers, so the base's rows keep their places. A
    kind that cannot grow its rows (Kind.character_rows) refuses new characters."""
    base = Vocab(tuple(checkpoint["vocab"]))
    new = sorted(set("".join(items)) - set(base.chars[1:]))
    if base.chars[0] in new:
        raise InitError(f"--init {spec}: the list has {base.chars[0]!r}, the base's start and end of every item")
    kind = kind_named(checkpoint["model_config"]["kind"])
    if new and kind.character_rows is None:
        shown = ", ".join(repr(ch) for ch in new[:5]) + (", ..." if len(new) > 5 else "")
        raise InitError(f"--init {spec}: the list has characters the base does not know ({shown}), and a "
                        f"{kind.name} model cannot take new ones")  # fmt: skip
    return Vocab((*base.chars, *new))


def sized(model_config: ModelConfig, splits: Splits, spec: str | Path) -> ModelConfig:
    """The fine-tune's model config with the list's facts (its vocabulary and labels), but a position
    table as long as the base's: its rows are trained, so a list's longest item may not outrun them."""
    base_longest, longest = model_config.facts.longest, splits.facts.longest
    if base_longest is None or "longest" not in kind_named(model_config.kind).needs:  # a model of any length
        return model_config.sized_for(splits)
    if longest > base_longest:
        too_long = f"the list's longest item has {longest} characters, and the base reads at most {base_longest}"
        raise InitError(f"--init {spec}: {too_long}")
    return ModelConfig(model_config.kind, replace(splits.facts, longest=base_longest), model_config.options)


def start_from(model: torch.nn.Module, checkpoint: dict, label_columns: LabelColumns | None) -> None:
    """Load the base's weights into `model`, a new model of the base's options sized for the new list
    (grown_vocab): the rows of the characters it knows, new rows for the others (see the module's
    docstring), and its label embeddings only if the list's label columns are the base's."""
    rows = kind_of(model).character_rows
    state = model.state_dict()
    n_known = len(checkpoint["vocab"])
    same_labels = label_columns is not None and label_columns.saved() == checkpoint.get("labels")
    kept = None if same_labels else _unlabelled(checkpoint)  # None: every tensor of the base
    for name, weights in checkpoint["model"].items():
        if kept is not None and name not in kept:
            continue  # the labels' embeddings and what conditions on them: the list's own labels start new
        if rows is not None and name in (rows.embedding, rows.head, rows.head_bias):
            state[name] = _grown(name, rows, weights, state[name], n_known)
        elif name not in state or state[name].shape != weights.shape:
            raise InitError(f"the base's {name} {tuple(weights.shape)} does not fit this model")
        else:
            state[name] = weights
    model.load_state_dict(state)


def _grown(name: str, rows: CharacterRows, known: torch.Tensor, fresh: torch.Tensor, n_known: int) -> torch.Tensor:
    """A tensor with a row per character: the base's rows, then the new characters'."""
    grown = fresh.clone()
    grown[:n_known] = known
    if name == rows.embedding:  # a new character reads as the average known one (row 0 is the end token)
        grown[n_known:] = known[1:].mean(dim=0)
    elif name == rows.head:
        grown[n_known:] = 0.0  # the new logit is its bias alone
    else:
        grown[n_known:] = NEW_LOGIT
    return grown


def record(checkpoint: dict, spec: str | Path) -> dict:
    """What a fine-tune's checkpoint keeps of its base: the name or path it was given, and the
    fingerprint of the data the base trained on."""
    return {"init": str(spec), "data_fingerprint": checkpoint["data_fingerprint"]}


def _unlabelled(checkpoint: dict) -> set[str]:
    """The names of the tensors the base's model would have without labels (built on the meta device:
    no memory, and no draw from the random numbers that the run's dropout and batches go on to use)."""
    config = ModelConfig.from_saved(checkpoint["model_config"])
    with torch.device("meta"):
        bare = build_model(ModelConfig(config.kind, replace(config.facts, label_sizes=()), config.options))
    return set(bare.state_dict())
