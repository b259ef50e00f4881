"""Kinds of model (kinds.py, models.py): what every kind keeps of the package's contract, here of
makemore's Transformer and GRU, which the package's whole-name layout, scoring and sampling serve as
they serve ConvWaveNet; and a kind from outside the package (bigram.py), registered as the docs say
a kind is added, which every command then takes."""

import os
from pathlib import Path

import pytest
import torch

from wavenet_names.batches import NameBatches
from wavenet_names.checkpoint import load_checkpoint
from wavenet_names.cli import main
from wavenet_names.gru import GRU
from wavenet_names.models import KINDS, ModelConfig, build_model, count_params, register
from wavenet_names.scoring import evaluate, score
from wavenet_names.splits import Facts, Splits
from wavenet_names.transformer import Transformer

import bigram as bigram_kind
from helpers import batch, run_cli, small

PEERS = pytest.mark.parametrize("kind", ["transformer", "gru"])


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


@pytest.fixture
def bigram():
    """The bigram kind of tests/bigram.py, registered as a program that adds a kind registers it, and
    taken back afterwards."""
    register(bigram_kind.KIND)
    yield bigram_kind.KIND
    del KINDS["bigram"]


def test_a_kind_from_outside_the_package_trains_resumes_evaluates_scores_and_samples(
    bigram, small_data_file, tmp_path, capsys
):
    out, once = tmp_path / "run", tmp_path / "once"
    train = ["train", "--model", "bigram", "--data", str(small_data_file), "--samples", "0", "--schedule", "constant"]
    assert main([*train, "--out", str(out), "--steps", "100"]) == 0
    assert main(["train", "--out", str(out), "--resume", "--steps", "200", "--samples", "0"]) == 0
    assert main([*train, "--out", str(once), "--steps", "200"]) == 0
    resumed, whole = (load_checkpoint(run / "last.pt") for run in (out, once))
    assert resumed["step"] == whole["step"] == 200 and torch.equal(
        resumed["model"]["table.weight"], whole["model"]["table.weight"]
    )
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out)]) == 0
    split, loss = capsys.readouterr().out.split()
    assert split == "val" and float(loss) < 2.6  # a bigram of names: about 2.45 (uniform: 3.30)
    assert main(["score", str(small_data_file), "--checkpoint", str(out)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 400
    for _ in range(2):
        assert main(["sample", "--checkpoint", str(out), "-n", "5", "--seed", "0"]) == 0
    names = capsys.readouterr().out.splitlines()
    assert len(names) == 10 and names[:5] == names[5:]  # the same seed, the same names


def test_a_kind_from_outside_the_package_is_served_and_races(bigram, small_data_file, tmp_path, capsys):
    from fastapi.testclient import TestClient

    from wavenet_names.server import create_app

    race = ["experiment", "race", "--models", "bigram", "--budgets", "0.2,0.5", "--data", str(small_data_file)]
    assert main([*race, "--out", str(tmp_path / "race")]) == 0
    assert "| bigram, its own recipe | " in (tmp_path / "race" / "results.md").read_text()
    checkpoint = next((tmp_path / "race").glob("bigram*/0.5s-seed42")) / "model.pt"
    with TestClient(create_app([checkpoint])) as client:
        assert client.get("/api/model").json()["kind"] == "bigram"
        response = client.post("/api/sample", json={"n": 3, "max_len": 8})
        assert response.status_code == 200 and len(response.json()["names"]) == 3
        assert all(len(name["name"]) <= 8 for name in response.json()["names"])


def test_a_kind_from_outside_the_package_refuses_what_it_does_not_read_in_one_line(bigram, small_data_file, capsys):
    assert main(["train", "--model", "bigram", "--data", str(small_data_file), "--n-layers", "3"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "wavenet-names train: error: --n-layers is not an option of the bigram model, which takes --spread"
    ]
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    shown = " ".join(capsys.readouterr().out.split())  # as wrapped to any width
    assert "bigram model only: --spread SPREAD" in shown and "bigram: makemore's bigram" in shown


@pytest.mark.parametrize("kind, params", [("transformer", 204_544), ("gru", 28_315)])
def test_makemores_default_sizes_have_its_parameter_counts(kind, params, all_words):
    """makemore's Transformer (4 layers, 4 heads, n_embd 64) and GRU (n_embd 64, n_embd2 64) on
    data/names.txt, whose positions are its longest name (15) and the end token."""
    facts = Splits.from_words(all_words).facts
    assert facts == Facts(27, (), 15)
    assert count_params(build_model(ModelConfig(kind, facts))) == params


@pytest.mark.slow  # starts the program
def test_a_kind_that_an_installed_distribution_names_reaches_the_command(small_data_file, tmp_path):
    """As a distribution that declares [project.entry-points."wavenet_names.kinds"] bigram = "bigram:KIND"
    installs it (a .dist-info folder on the path, as pip leaves it): `wavenet-names` takes the kind."""
    info = tmp_path / "site" / "bigram_kind-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bigram-kind\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[wavenet_names.kinds]\nbigram = bigram:KIND\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(Path(__file__).parent)])}
    args = ["--model", "bigram", "--data", str(small_data_file), "--steps", "20", "--samples", "3"]
    status, out, err = run_cli("train", *args, "--out", str(tmp_path / "run"), env=env)
    assert status == 0 and "best model (step 20)" in out, err
    assert load_checkpoint(tmp_path / "run" / "model.pt")["model_config"]["kind"] == "bigram"
