"""Configuration (configuration.py): how a run trains, checked before any work; the one function that
resolves a run's settings from options by name; and every option of `train` either resumes changed
or is refused by name."""

from pathlib import Path

import pytest
import torch

from wavenet_names.checkpoint import load_checkpoint
from wavenet_names.configuration import (
    RESUMABLE,
    TrainConfig,
    changed_settings,
    option_names,
    same_settings,
    saved_configs,
    settings,
)
from wavenet_names.fitting import fit
from wavenet_names.models import ModelConfig
from wavenet_names.options import OptionError
from wavenet_names.splits import Facts, Splits
from wavenet_names.training import Trainer

from helpers import small_run


@pytest.fixture
def splits(all_words):
    return Splits.from_words(all_words[:400])


@pytest.mark.parametrize(
    "field, value",
    [("steps", 0), ("batch_size", -1), ("eval_every", 0), ("lr", 0.0), ("lr", float("nan")), ("optimizer", "adam")],
)
def test_bad_train_configs_are_refused(field, value):
    with pytest.raises(ValueError):
        TrainConfig(**{field: value})


OTHER_VALUES = {
    "model": "hierarchical",
    "init": "names",
    "teacher": "names",
    "distill_temperature": 3.0,
    "distill_weight": 0.5,
    "n_embd": 9,
    "n_hidden": 17,
    "n_layers": 3,
    "block_size": 5,
    "batchnorm_bug": True,
    "gated": True,
    "residual": True,
    "skip": True,
    "cycles": 2,
    "dropout": 0.1,
    "norm": "layer",
    "data": "other.txt",
    "steps": 50,
    "batch_size": 8,
    "optimizer": "sgd",
    "lr": 0.01,
    "schedule": "step",
    "warmup": 3,
    "weight_decay": 0.2,
    "seed": 7,
    "device": "cpu",
    "eval_every": 3,
    "report_test": True,
    "precision": "bf16",
    "compile": True,
    "checkpoint_every": 2,
    "patience": 5,
    "max_time": 3600.0,
    "members": 2,
    "members_at_once": 2,
    "labels": False,
    "label_dropout": 0.3,
    "n_head": 8,
}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # what importing torch.compile's machinery says
@pytest.mark.parametrize("name", sorted(option_names()))
def test_every_option_resumes_changed_or_is_refused(name, splits, tmp_path):
    """A resumed run continues the saved one: an option declared resumable takes its new value, and
    any other is refused, naming it, rather than silently ignored."""
    assert set(OTHER_VALUES) == option_names(), "give every option of train a value here"
    fit(small_run(splits, steps=3, eval_every=3), tmp_path)
    checkpoint = load_checkpoint(tmp_path / "last.pt")
    field = name
    if field in RESUMABLE:
        resumed = Trainer.from_checkpoint(checkpoint, splits, torch.device("cpu"), {field: OTHER_VALUES[name]})
        assert getattr(resumed.config, field) == OTHER_VALUES[name]
    else:
        with pytest.raises(OptionError, match="cannot change when a run resumes") as refused:
            Trainer.from_checkpoint(checkpoint, splits, torch.device("cpu"), {field: OTHER_VALUES[name]})
        assert refused.value.names == (field,)


def test_settings_put_the_options_given_over_a_preset_over_the_kinds_own_defaults_and_recipe():
    model_config, config = settings({"model": "transformer", "lr": 0.01, "n_layers": 2})
    assert (model_config.kind, model_config.options.n_layers, model_config.options.n_embd) == ("transformer", 2, 64)
    assert (config.lr, config.steps, config.batch_size) == (0.01, 15_000, 32)  # its recipe under the lr given
    model_config, config = settings({"n_hidden": 16}, preset="best")
    assert (model_config.options.n_hidden, model_config.options.n_layers, config.batch_size) == (16, 4, 256)
    with pytest.raises(ValueError, match="^--preset best is a conv model; it takes no --model gru$"):
        settings({"model": "gru"}, preset="best")


@pytest.mark.parametrize(
    "options, problem",
    [
        ({"n_layer": 3}, "^'n_layer' is not an option of train$"),
        ({"model": "gru", "n_layers": 3}, "^n_layers is not an option of the gru model, which takes n_embd and n_hid"),
        ({"model": "lstm"}, "^model must be one of conv, hierarchical, flat, transformer and gru, got 'lstm'$"),
        ({"n_embd": 0}, "^n_embd must be at least 1, got 0$"),
    ],
)
def test_settings_refuse_what_no_kind_reads_or_the_kind_does_not_read_in_one_line(options, problem):
    with pytest.raises(ValueError, match=problem):
        settings(options)


def test_a_saved_runs_settings_are_the_same_whatever_version_wrote_them():
    """A checkpoint written before each kind owned its options holds every kind's options in one
    mapping: it reads as the same settings, and a change of one of its own options as a change."""
    before = load_checkpoint(Path(__file__).parent / "before" / "transformer.pt")
    saved = saved_configs(before["model_config"], before["train_config"])
    assert saved[0] == ModelConfig.of("transformer", Facts(27, (), 10), n_embd=8, n_head=2, n_layers=1)  # positions 11
    assert same_settings(saved, *saved)
    assert changed_settings(saved, {"model": "transformer", "n_head": 2, "n_layers": 2, "steps": 150}) == ("n_layers",)
