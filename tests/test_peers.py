"""makemore's Transformer and GRU as kinds of model: their sizes, causality, cached generation, and
that the package's whole-name layout, scoring and sampling serve them as they serve ConvWaveNet."""

import pytest
import torch

from wavenet_names import encode_names, pad_batch
from wavenet_names.cli import main
from wavenet_names.data import NameBatches
from wavenet_names.gru import GRU
from wavenet_names.models import ModelConfig, build_model, count_params, kind_config
from wavenet_names.sampling import SampleConfig, generate, longest_name
from wavenet_names.scoring import score
from wavenet_names.training import Splits, evaluate
from wavenet_names.transformer import Transformer

PEERS = pytest.mark.parametrize("kind", ["transformer", "gru"])


def small(kind: str, vocab_size: int, positions: int):
    """A small model of `kind`, at its (seeded) random initialisation. The transformer has dropout,
    which eval mode must switch off everywhere for the checks below to hold."""
    sizes = (
        dict(n_embd=16, n_layers=2, n_head=2, dropout=0.3) if kind == "transformer" else dict(n_embd=16, n_hidden=24)
    )
    torch.manual_seed(0)
    return build_model(ModelConfig(kind=kind, vocab_size=vocab_size, positions=positions, **sizes))


def batch(words, vocab, block_size=1):
    return pad_batch(*encode_names(words, vocab), block_size)  # idx (B, n): '.', the name; targets (B, n)


@pytest.mark.parametrize("kind, params", [("transformer", 204_544), ("gru", 28_315)])
def test_makemores_default_sizes_have_its_parameter_counts(kind, params, all_words):
    """makemore's Transformer (4 layers, 4 heads, n_embd 64) and GRU (n_embd 64, n_embd2 64) on
    data/names.txt, whose positions are its longest name (15) and the end token."""
    splits = Splits.from_words(all_words)
    assert splits.positions == 16
    assert count_params(build_model(kind_config(kind, vocab_size=27, positions=splits.positions))) == params


@PEERS
def test_a_later_character_never_changes_an_earlier_output(kind, words, vocab):
    model = small(kind, len(vocab), 16).eval()
    idx, _ = batch(words[:8], vocab)
    logits, _ = model(idx)
    for j in (1, 4, idx.shape[1] - 1):
        changed = idx.clone()
        changed[:, j:] = torch.randint(1, len(vocab), changed[:, j:].shape, generator=torch.Generator().manual_seed(j))
        perturbed, _ = model(changed)
        assert torch.allclose(perturbed[:, :j], logits[:, :j], atol=1e-6), j  # before j: the same
        assert not torch.allclose(perturbed[:, j:], logits[:, j:], atol=1e-3)  # from j on: another input


@PEERS
def test_cached_generation_gives_the_full_forward_logits(kind, words, vocab):
    model = small(kind, len(vocab), 16).eval()
    idx, _ = batch(words[:8], vocab)
    full, _ = model(idx)  # (B, T, vocab)
    state, stepped = model.init_state(idx.shape[0]), []
    for t in range(idx.shape[1]):
        logits, state = model.step(idx[:, t], state)
        stepped.append(logits)
    stepped = torch.stack(stepped, dim=1)
    assert torch.allclose(stepped, full, atol=1e-5)


@PEERS
def test_padding_and_neighbours_change_no_score(kind, words, vocab):
    """Scores run a chunk of items padded to its longest: each is the item's loss alone, and their mean
    weighted by length is evaluate's loss."""
    model = small(kind, len(vocab), 16).eval()
    scores = score(model, vocab, words)
    with torch.no_grad():
        alone = [float(model(*batch([w], vocab))[1]) for w in words]
    assert scores == pytest.approx(alone, rel=1e-5)
    weights = [len(w) + 1 for w in words]
    mean = sum(s * w for s, w in zip(scores, weights, strict=True)) / sum(weights)
    assert evaluate(model, NameBatches(words, vocab, model.block_size)) == pytest.approx(mean, rel=1e-6)


def test_the_transformers_dropout_draws_in_training_alone_and_adds_no_parameter(vocab, words):
    idx, targets = batch(words[:8], vocab)
    model = small("transformer", len(vocab), 16)
    assert count_params(model) == count_params(
        build_model(
            ModelConfig(kind="transformer", vocab_size=len(vocab), positions=16, n_embd=16, n_layers=2, n_head=2)
        )
    )
    model.train()
    first, second = model(idx, targets)[1], model(idx, targets)[1]
    assert first != second  # each training forward draws its own dropout
    model.eval()
    assert model(idx, targets)[1] == model(idx, targets)[1]
    with pytest.raises(ValueError, match="does not apply to the gru model"):
        ModelConfig(kind="gru", dropout=0.1)


def test_the_transformer_samples_and_scores_no_more_than_its_positions(vocab):
    model = small("transformer", len(vocab), 6).eval()  # a '.' and 5 characters
    assert longest_name(model) == 5 and longest_name(small("gru", len(vocab), 6)) is None
    names = generate(model, vocab, SampleConfig(n=200, seed=0, cut_at=64))
    assert max(map(len, names)) == 5  # an untrained model reaches the limit often
    with pytest.raises(ValueError, match="an item of 6 characters: this transformer reads at most 5"):
        score(model, vocab, ["abcdef"])
    with pytest.raises(ValueError, match="the prefix has 6 characters; this model reads names of 5"):
        generate(model, vocab, SampleConfig(n=1, prefix="abcdef"))


@pytest.mark.parametrize("model_cls", [Transformer, GRU])
def test_labels_are_refused(model_cls, small_table_file, tmp_path, capsys):
    kind = model_cls.__name__.lower()
    assert main(["train", "--model", kind, "--data", str(small_table_file), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"wavenet-names train: error: --model {kind} takes no labels (conv and hierarchical do): "
        "train it with --no-labels, on the items alone"
    ]
    with pytest.raises(ValueError, match="takes no labels"):
        small(kind, 27, 16)(torch.zeros(1, 3, dtype=torch.long), labels=torch.zeros(1, 2, dtype=torch.long))


@PEERS
def test_a_trained_peer_samples_evaluates_and_scores_from_the_command_line(kind, small_data_file, tmp_path, capsys):
    out = str(tmp_path)
    assert (
        main(
            [
                "train",
                "--model",
                kind,
                "--data",
                str(small_data_file),
                "--out",
                out,
                "--steps",
                "6",
                "--eval-every",
                "3",
                "--n-embd",
                "16",
                "--samples",
                "0",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["sample", "--checkpoint", out, "-n", "5", "--seed", "1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 5
    assert main(["evaluate", "--checkpoint", out]) == 0
    assert capsys.readouterr().out.startswith("val ")
    assert main(["train", "--out", out, "--resume", "--steps", "9", "--samples", "0"]) == 0
    assert "best model (step" in capsys.readouterr().out
