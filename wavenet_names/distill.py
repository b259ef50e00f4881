"""Knowledge distillation (Hinton, Vinyals and Dean, 2015): a student trained on its teacher's
probabilities as well as on the data's own characters, so that one small model learns what an
ensemble knows.

At every position the student's loss mixes the two:

    (1 - weight) * CE(data, student) + weight * T^2 * KL(teacher_T || student_T)

where p_T is softmax(logits / T); T^2 keeps the soft term's gradients at the scale of the hard one's
whatever T is. The teacher's probabilities at T are computed once, for every position of the training
split, and kept: soft (P, vocab), in the split's order, each name's characters and then its end token,
name after name. That is the order of the lecture's windows and of the whole-name view's positions
alike, so each batch takes its own rows (batches.py), and a step costs the student's forward and
backward and a KL over its positions: no teacher runs during training.
"""

import torch
import torch.nn.functional as F

from . import shipped
from .checkpoint import label_columns, load_model
from .losses import widened
from .models import kind_of
from .splits import Splits

CHUNK = 1024  # names the teacher reads at once

# A student's recipe, the shipped models' (`wavenet-names ship`): four times the default run's steps,
# since the teacher's probabilities keep it from learning the training names by heart. Chosen on val
# with `--preset max` as the teacher (docs/experiments.md): the default model reached 1.9433 in 4,000
# steps and 1.9263 in 16,000 (temperature 2, weight 0.9, also the options' defaults), against 1.9771 alone.
STUDENT = {"steps": 16_000, "eval_every": 1000, "distill_weight": 0.9, "distill_temperature": 2.0}


def teacher_probabilities(spec: str, splits: Splits, temperature: float, device: torch.device) -> torch.Tensor:
    """The teacher's probabilities at `temperature` for every position of the training split, soft
    (P, vocab) in the split's order (see the module's docstring), on `device`. The teacher (a
    checkpoint, a run's or an ensemble's directory, a shipped model's name) must share the split's
    vocabulary, labels and data, or its probabilities would be of other positions: refused in one line."""
    model, vocab, checkpoint = load_model(shipped.resolve(spec), device)
    if vocab != splits.vocab:
        raise ValueError(
            f"--teacher {spec}: its characters are not the data's ({''.join(vocab.chars[1:])!r} against "
            f"{''.join(splits.vocab.chars[1:])!r}); a teacher must be trained on the same data"
        )
    columns = label_columns(checkpoint)
    ours = splits.label_columns
    if (columns and columns.saved()) != (ours and ours.saved()):
        raise ValueError(f"--teacher {spec}: its labels are not the data's; a teacher must have the same labels")
    if checkpoint.get("data_fingerprint") != splits.fingerprint:
        raise ValueError(
            f"--teacher {spec}: trained on other data or another split than this run's, so its training "
            "names are not this run's; a teacher must be trained on the same data file"
        )
    words, labels = splits.words("train"), splits.labels("train")
    view = kind_of(model).batches  # the teacher's own view of the names: its batches, its order
    soft = []
    with torch.no_grad():
        for i in range(0, len(words), CHUNK):
            chunk_labels = None if labels is None else labels[i : i + CHUNK]
            idx, targets, _, chunk_labels = view.batch_of(words[i : i + CHUNK], vocab, model.block_size, chunk_labels)
            idx, targets = idx.to(device), targets.to(device)
            logits, _ = model(idx, targets, labels=None if chunk_labels is None else chunk_labels.to(device))
            soft.append((widened(logits[targets != -1]) / temperature).softmax(-1))  # row-major: the split's order
    return torch.cat(soft)


def distilled_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    hard: torch.Tensor,
    soft: torch.Tensor,
    temperature: float,
    weight: float,
) -> torch.Tensor:
    """The mixed loss of the module's docstring: logits (..., vocab) at targets' positions (...), -1
    where there is none; hard, the data's cross-entropy (the model's own loss); soft (..., vocab),
    the teacher's probabilities at `temperature`, at the same positions."""
    kept = targets != -1
    student = (widened(logits[kept]) / temperature).log_softmax(-1)  # (positions, vocab)
    kl = F.kl_div(student, soft[kept], reduction="batchmean")  # the mean over positions
    return (1 - weight) * hard + weight * temperature**2 * kl
