"""`wavenet-names export`: a trained model as two ONNX graphs (exported.py says what they take and
give), for runtimes without PyTorch: onnxruntime on a desktop, a phone or a page, Unity's Sentis,
or this package's own sampler, portable.py.

The step graph is the cached generation that `sample` runs (ConvWaveNet.step_queued: each layer's
queue of its last inputs as state in and out), and the full graph the plain dilated convolution over
padded names (ConvWaveNet.forward_full). Both come from eval mode, so BatchNorm is its running
statistics, and both take any batch: the example batch they are traced with has 2 rows, since an
example of 1 would fix the dimension at 1.
"""

import gzip
import json
import logging
import warnings
from contextlib import contextmanager
from pathlib import Path

import onnxscript  # noqa: F401  (what torch.onnx.export(dynamo=True) writes with: missing, one line now)
import torch
from torch import nn

from .console import version
from .ensemble import Ensemble
from .exported import FORMAT, FULL, KEY, SEEN, STEP, ExportedFacts
from .files import check_writable, replace
from .loading import LoadedModel
from .models import KINDS, kind_of
from .options import listing

EXAMPLE_BATCH = 2  # rows of the example the graphs are traced with: more than 1 keeps the batch dynamic


class _Step(nn.Module):
    """step_queued() with its state as separate tensors: the inputs and outputs of the step graph."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, token, labels, queues):
        logits, queued = self.model.step_queued(token, queues, labels)
        return (logits, *queued)


class _Full(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, idx, labels):
        return self.model.forward_full(idx, labels)


def export(loaded: LoadedModel, out: str | Path) -> list[Path]:
    """Write the step and full graphs of `loaded`'s model into the directory `out`, and the names of
    its splits beside them; returns the files written. A model that cannot be exported (an ensemble,
    a kind without a step_queued), and an `out` that holds a run's checkpoints, are refused first."""
    model = loaded.model
    if isinstance(model, Ensemble):
        raise ValueError(
            "an ensemble exports as no one graph: export one of its members' model.pt, or distil the "
            "ensemble into one model first (train --teacher)"
        )
    kind = kind_of(model)
    if not kind.exports:
        exporting = listing([k.name for k in KINDS.values() if k.exports])
        raise ValueError(f"a {kind.name} model does not export to ONNX; the kinds that do: {exporting}")
    out = _checked(Path(out))
    facts = _facts(loaded, kind.name)
    was_training = model.training
    model.eval()  # BatchNorm as its running statistics, and no dropout: what sampling and scoring compute
    try:
        written = [_step_graph(model, facts, out / STEP), _full_graph(model, facts, out / FULL)]
    finally:
        model.train(was_training)
    seen = loaded.seen
    if not seen.missing:
        names = {"train": sorted(seen.train), "held_out": sorted(seen.held_out)}
        with replace(out / SEEN) as partial:
            partial.write_bytes(gzip.compress(json.dumps(names, ensure_ascii=False).encode("utf-8")))
        written.append(out / SEEN)
    elif (out / SEEN).exists():  # an earlier export's names are not this model's
        (out / SEEN).unlink()
    return written


def _facts(loaded: LoadedModel, kind: str) -> dict:
    """ExportedFacts' fields but the graph's name: the same in both graphs."""
    model = loaded.model
    return dict(
        format=FORMAT,
        version=version(),
        kind=kind,
        chars=loaded.vocab.chars,
        block_size=model.block_size,
        queues=tuple(model.queue_shapes()),
        cut_at=loaded.cut_at,
        labels=loaded.columns.saved() if loaded.columns is not None else None,
        val=loaded.val,
        model=loaded.title,
        recipe={k: loaded.checkpoint.get(k) for k in ("model_config", "train_config")},
        dataset=loaded.checkpoint.get("dataset"),
        data_fingerprint=loaded.data_fingerprint,
    )


def _example_labels(facts: dict) -> torch.Tensor | None:
    """Labels for the example batch (EXAMPLE_BATCH, K), all unknown; None for a model without labels."""
    labels = facts["labels"]
    return None if labels is None else torch.zeros(EXAMPLE_BATCH, len(labels["names"]), dtype=torch.long)


def _step_graph(model: nn.Module, facts: dict, path: Path) -> Path:
    labels, batch = _example_labels(facts), torch.export.Dim("batch")
    queues = tuple(torch.zeros(EXAMPLE_BATCH, d, n) for d, n in model.queue_shapes())
    token = torch.zeros(EXAMPLE_BATCH, dtype=torch.long)
    return _write(
        _Step(model),
        (token, labels, queues),
        ({0: batch}, None if labels is None else {0: batch}, tuple({0: batch} for _ in queues)),
        ["token", *([] if labels is None else ["labels"]), *(f"queue{i}" for i in range(len(queues)))],
        ["logits", *(f"queue{i}_out" for i in range(len(queues)))],
        ExportedFacts(graph="step", **facts),
        path,
    )


def _full_graph(model: nn.Module, facts: dict, path: Path) -> Path:
    labels, batch = _example_labels(facts), torch.export.Dim("batch")
    length = torch.export.Dim("length", min=model.block_size)  # T: any length from one window up
    idx = torch.zeros(EXAMPLE_BATCH, model.block_size + 4, dtype=torch.long)
    return _write(
        _Full(model),
        (idx, labels),
        ({0: batch, 1: length}, None if labels is None else {0: batch}),
        ["idx", *([] if labels is None else ["labels"])],
        ["logits"],
        ExportedFacts(graph="full", **facts),
        path,
    )


def _checked(out: Path) -> Path:
    """The directory to export into, checked before any work: one that cannot be written is refused, and so
    is a run's directory, so that an export never mixes with the checkpoints of training."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: is a file, not a directory")
    if (out / "model.pt").exists() or (out / "last.pt").exists():
        raise ValueError(f"--out {out}: holds a training run's checkpoints; export into a directory of its own")
    check_writable(out, "--out")
    return out


def _write(module, args, dynamic_shapes, input_names, output_names, facts: ExportedFacts, path: Path) -> Path:
    """One graph, traced with torch.export (the exporter's dynamo path), with `facts` in its metadata."""
    with _quiet():
        program = torch.onnx.export(
            module,
            args,
            dynamo=True,
            input_names=input_names,
            output_names=output_names,
            dynamic_shapes=dynamic_shapes,
            optimize=True,
            verbose=False,
        )
    program.model.metadata_props[KEY] = facts.to_json()
    with replace(path) as partial:  # whole or not at all: an earlier export stays until this one is written
        program.save(str(partial))
    return path


@contextmanager
def _quiet():
    """The exporter's warnings and log lines are about its own internals (torchvision's operators, say):
    nothing a user can act on."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
