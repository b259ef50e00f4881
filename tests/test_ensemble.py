"""Several checkpoints as one model: their distributions averaged in probability, not in logits. The
ensemble's loss must be that of the mean of its members' probabilities, position by position, for
every command that takes a model; cached generation must still give what recomputing gives."""

import math

import pytest
import torch
import torch.nn.functional as F

from wavenet_names import (
    ConvWaveNet,
    HierarchicalMLP,
    SampleConfig,
    encode_names,
    generate,
    pad_batch,
    windows,
)
from wavenet_names.checkpoint import load_model
from wavenet_names.cli import main
from wavenet_names.ensemble import Ensemble
from wavenet_names.models import batches_for
from wavenet_names.scoring import evaluate
from wavenet_names.splits import Splits

from helpers import TINY, mixture_loss


@pytest.mark.parametrize("kind", ["conv", "hierarchical"])
def test_the_loss_is_the_mean_of_the_members_probabilities(kind, words, vocab):
    cls = ConvWaveNet if kind == "conv" else HierarchicalMLP
    members = [cls(len(vocab), 8, 16, 3) for _ in range(3)]
    for m in members:  # away from the near-uniform start, where every average is about the same
        torch.nn.init.normal_(m.lm_head.weight, std=2.0)
    if kind == "conv":
        inputs, targets = pad_batch(*encode_names(words, vocab), 8)
    else:
        inputs, targets = windows(words, vocab, 8)
    ensemble = Ensemble(members).eval()
    with torch.no_grad():
        logits, loss = ensemble(inputs, targets)
    assert loss.item() == pytest.approx(mixture_loss(members, inputs, targets), rel=1e-5)
    assert torch.allclose(logits.exp().sum(-1), torch.ones(()))  # log-probabilities of one distribution
    with torch.no_grad():
        mean_logits = sum(m(inputs, targets)[0] for m in members) / 3  # what averaging logits would give
        valid = targets != -1
        of_mean_logits = F.cross_entropy(mean_logits[valid], targets[valid]).item()
        members_mean = sum(m(inputs, targets)[1].item() for m in members) / 3
    assert loss.item() != pytest.approx(of_mean_logits, rel=1e-3)  # another model
    assert loss.item() <= members_mean + 1e-6  # log is concave: a mixture's loss is at most its members' mean


def test_cached_generation_is_the_ensembles_own(words, vocab):
    """The cache of each member, mixed at every step, samples the names that recomputing samples."""
    ensemble = Ensemble([ConvWaveNet(len(vocab), 8, 16, 3) for _ in range(2)]).eval()
    config = SampleConfig(n=30, seed=0, cut_at=20)
    assert generate(ensemble, vocab, config, use_cache=True) == generate(ensemble, vocab, config, use_cache=False)


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory, all_words):
    """Two conv runs from different seeds, and a hierarchical one, on the same small file."""
    root = tmp_path_factory.mktemp("runs")
    data = root / "names.txt"
    data.write_text("\n".join(all_words[:300]) + "\n")
    for name, extra in [("a", ["--seed", "1"]), ("b", ["--seed", "2"]), ("tree", ["--model", "hierarchical"])]:
        args = ["train", "--data", str(data), "--out", str(root / name), "--steps", "30", "--eval-every", "30"]
        assert main([*args, *TINY, *extra]) == 0
    return root


def test_evaluate_score_and_sample_take_several_checkpoints(runs_dir, capsys):
    a, b = str(runs_dir / "a" / "model.pt"), str(runs_dir / "b" / "model.pt")
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", a, "--checkpoint", b]) == 0
    split, loss = capsys.readouterr().out.split()
    members = [load_model(path)[0] for path in (a, b)]
    vocab = load_model(a)[1]
    splits = Splits.from_words((runs_dir / "names.txt").read_text().split(), vocab)
    val = batches_for(members[0], splits, "val")
    inputs, targets, _ = next(val.chunks(10_000))  # every val name in one chunk
    assert split == "val" and float(loss) == pytest.approx(mixture_loss(members, inputs, targets), abs=1e-4)
    assert float(loss) == pytest.approx(evaluate(Ensemble(members), val), abs=1e-4)
    assert main(["score", str(runs_dir / "names.txt"), "--checkpoint", a, "--checkpoint", b]) == 0
    scores = [float(line.split("\t")[0]) for line in capsys.readouterr().out.splitlines()]
    assert len(scores) == 300 and all(math.isfinite(s) for s in scores)
    assert main(["sample", "--checkpoint", a, "--checkpoint", b, "-n", "5", "--seed", "0"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 5


def test_an_ensemble_of_different_models_is_one_line(runs_dir, capsys, tmp_path):
    a, tree = str(runs_dir / "a" / "model.pt"), str(runs_dir / "tree" / "model.pt")
    other = tmp_path / "other.txt"
    other.write_text("abc\nxyz\nabz\ncab\nzyx\nbca\nacb\nbaz\n")  # other characters
    assert (
        main(["train", "--data", str(other), "--out", str(tmp_path / "o"), "--steps", "2", "--eval-every", "2", *TINY])
        == 0
    )
    for second, problem in [
        (tree, "must be of one kind, got ConvWaveNet, HierarchicalMLP"),
        (str(tmp_path / "o" / "model.pt"), "its characters differ"),
    ]:
        capsys.readouterr()
        assert main(["evaluate", "--checkpoint", a, "--checkpoint", second]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and problem in err and "Traceback" not in err, err


# --- an ensemble trained in one command: train --members N ---------------------------------------------


# --- several members at once: train --members N --members-at-once K ----------------------------------
