"""makemore's Transformer (transformer.py): its size, its dropout, and the positions it reads."""

import pytest

from wavenet_names.choosing import SampleConfig
from wavenet_names.models import ModelConfig, build_model, count_params
from wavenet_names.sampling import generate, longest_name
from wavenet_names.scoring import score
from wavenet_names.splits import Facts

from helpers import batch, small


def test_the_transformers_dropout_draws_in_training_alone_and_adds_no_parameter(vocab, words):
    idx, targets = batch(words[:8], vocab)
    model = small("transformer", len(vocab), 16)
    no_dropout = ModelConfig.of("transformer", Facts(len(vocab), (), 15), n_embd=16, n_layers=2, n_head=2, dropout=0)
    assert count_params(model) == count_params(build_model(no_dropout))
    model.train()
    first, second = model(idx, targets)[1], model(idx, targets)[1]
    assert first != second  # each training forward draws its own dropout
    model.eval()
    assert model(idx, targets)[1] == model(idx, targets)[1]
    with pytest.raises(
        ValueError, match="^dropout is not an option of the gru model, which takes n_embd and n_hidden$"
    ):
        ModelConfig.of("gru", dropout=0.1)


def test_the_transformer_samples_and_scores_no_more_than_its_positions(vocab):
    model = small("transformer", len(vocab), 6).eval()  # a '.' and 5 characters
    assert longest_name(model) == 5 and longest_name(small("gru", len(vocab), 6)) is None
    names = generate(model, vocab, SampleConfig(n=200, seed=0, cut_at=64))
    assert max(map(len, names)) == 5  # an untrained model reaches the limit often
    with pytest.raises(ValueError, match="an item of 6 characters: this transformer reads at most 5"):
        score(model, vocab, ["abcdef"])
    with pytest.raises(ValueError, match="the prefix has 6 characters; this model reads names of 5"):
        generate(model, vocab, SampleConfig(n=1, prefix="abcdef"))
