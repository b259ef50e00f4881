"""train --teacher: the teacher's probabilities, computed once, reach each batch at its own positions;
the loss mixes them with the data's as the formula says; and a teacher of other data is refused."""

import math

import pytest
import torch

from wavenet_names.batches import NameBatches, WindowBatches
from wavenet_names.checkpoint import load_model
from wavenet_names.cli import main
from wavenet_names.data import encode_names
from wavenet_names.distill import distilled_loss, teacher_probabilities
from wavenet_names.splits import Splits

from helpers import TINY, one_error

T = 2.0


def alone(model, vocab, word: str) -> torch.Tensor:
    """The teacher's probabilities at T for one name, read on its own: (len + 1, vocab)."""
    idx, targets, _, _ = NameBatches.batch_of([word], vocab, model.block_size)
    with torch.no_grad():
        logits, _ = model(idx, targets)
    return (logits[0] / T).softmax(-1)


def test_a_batch_of_names_takes_the_teachers_probabilities_of_its_own_names(trained, small_data_file):
    splits = Splits.read(small_data_file)
    teacher, vocab, _ = load_model(trained)
    batches = NameBatches(splits.train, vocab, teacher.block_size)
    batches.soft = teacher_probabilities(str(trained), splits, T, torch.device("cpu"))
    assert batches.soft.shape == (batches.n_examples, len(vocab))
    batch = batches.sample(16, torch.Generator().manual_seed(0))
    for targets, soft in zip(batch.targets, batch.soft, strict=True):
        length = int((targets != -1).sum()) - 1  # its characters; then its end token
        word = vocab.decode(targets[:length])
        torch.testing.assert_close(soft[: length + 1], alone(teacher, vocab, word))
        assert not soft[length + 1 :].any()  # nothing past its end


def test_the_lectures_windows_take_the_same_probabilities_window_by_window(trained, small_data_file):
    """The per-position models' windows are the names' positions in the same order: a tree student
    learns from a conv teacher."""
    splits = Splits.read(small_data_file)
    teacher, vocab, _ = load_model(trained)
    windows = WindowBatches(splits.train, vocab, 8)
    windows.soft = teacher_probabilities(str(trained), splits, T, torch.device("cpu"))
    owners = [(word, j) for word in splits.train for j in range(len(word) + 1)]
    assert len(owners) == len(windows) == len(windows.soft)
    for k in (0, 1, 7, len(owners) // 2, len(owners) - 1):
        word, j = owners[k]
        torch.testing.assert_close(windows.soft[k], alone(teacher, vocab, word)[j])
        assert int(windows.Y[k]) == (encode_names([word], vocab)[0][0].tolist() + [0])[j]


def test_the_loss_is_the_datas_and_the_teachers_mixed():
    torch.manual_seed(0)
    logits, teacher = torch.randn(3, 5, 7), torch.randn(3, 5, 7)
    targets = torch.randint(0, 7, (3, 5))
    targets[0, 3:] = -1
    kept = targets != -1
    hard = torch.nn.functional.cross_entropy(logits[kept], targets[kept])
    soft = (teacher / T).softmax(-1)
    student = (logits / T).log_softmax(-1)
    kl = (soft * (soft.log() - student)).sum(-1)[kept].mean()  # by hand: the mean over positions
    mixed = distilled_loss(logits, targets, hard, soft, T, 0.7)
    torch.testing.assert_close(mixed, 0.3 * hard + 0.7 * T**2 * kl)
    assert distilled_loss(logits, targets, hard, soft, T, 0.0) == hard
    same = distilled_loss(logits, targets, hard, (logits / T).softmax(-1), T, 1.0)
    assert math.isclose(float(same), 0.0, abs_tol=1e-6)  # a student that is its teacher has nothing to learn


def test_a_teachers_weight_of_zero_trains_as_no_teacher(trained, small_data_file, tmp_path):
    """The soft term is added to the step and nothing else: at weight 0, the same digits."""
    args = ["train", "--data", str(small_data_file), "--steps", "6", "--eval-every", "3", *TINY]
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0
    assert main([*args, "--out", str(tmp_path / "taught"), "--teacher", str(trained), "--distill-weight", "0"]) == 0
    plain, taught = (load_model(tmp_path / run)[2]["best_val_loss"] for run in ("plain", "taught"))
    assert plain == taught
    assert main([*args, "--out", str(tmp_path / "half"), "--teacher", str(trained)]) == 0
    assert load_model(tmp_path / "half")[2]["best_val_loss"] != plain


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--teacher", "names"], "--teacher names: trained on other data or another split than this run's"),
        (["--teacher", "no-such-run"], "no-such-run: no such checkpoint file"),
        (["--teacher", "TRAINED", "--distill-weight", "2"], "--distill-weight must be from 0 to 1, got 2.0"),
        (["--teacher", "TRAINED", "--distill-temperature", "0"], "--distill-temperature must be a positive number"),
        (["--teacher", "TRAINED", "--compile"], "--compile trains in fixed shapes"),
    ],
)
def test_a_teacher_that_cannot_teach_is_refused_in_one_line(
    trained, small_data_file, tmp_path, capsys, flags, expected
):
    flags = [str(trained) if flag == "TRAINED" else flag for flag in flags]
    out = tmp_path / "student"
    assert main(["train", "--data", str(small_data_file), "--out", str(out), "--steps", "2", *TINY, *flags]) == 2
    assert expected in one_error(capsys)
    assert not out.exists()
