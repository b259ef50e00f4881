"""How tests/before/ was written: this script, run at commit 2946bd1 (before each kind owned its options
and its file), `python tests/before/written_by.py tests/before`. Kept as the record of what those
checkpoints are; the code it calls has moved since, and tests/test_checkpoints.py reads what it wrote.
The "names" of samples.json were drawn again from the same checkpoints when the draw became the one
that onnxruntime reproduces (choosing.py); their scores are as this script wrote them."""

import json
import shutil
import sys
from pathlib import Path

from wavenet_names.checkpoint import label_columns, load_model
from wavenet_names.choosing import SampleConfig
from wavenet_names.cli import main
from wavenet_names.sampling import generate
from wavenet_names.scoring import score

here = Path(sys.argv[1])
work = Path("/tmp/before-runs")
shutil.rmtree(work, ignore_errors=True)
work.mkdir()
names = Path("data/names.txt").read_text().splitlines()[:300]
(work / "names.txt").write_text("\n".join(names) + "\n")
lines = Path("data/names-by-decade.tsv").read_text().splitlines()
(work / "names.tsv").write_text("\n".join([lines[0], *lines[1 :: len(lines) // 300][:300]]) + "\n")
common = ["--steps", "150", "--eval-every", "75", "--samples", "0", "--batch-size", "16"]
runs = {
    "conv": ["--model", "conv", "--n-embd", "8", "--n-hidden", "16", "--n-layers", "2"],
    "conv-labelled": [
        "--model",
        "conv",
        "--n-embd",
        "8",
        "--n-hidden",
        "16",
        "--n-layers",
        "2",
        "--data",
        str(work / "names.tsv"),
    ],
    "conv-blocks": [
        "--model",
        "conv",
        "--n-embd",
        "8",
        "--n-hidden",
        "16",
        "--n-layers",
        "2",
        "--gated",
        "--residual",
        "--skip",
        "--dropout",
        "0.1",
        "--norm",
        "layer",
    ],
    "hierarchical": ["--model", "hierarchical", "--n-embd", "8", "--n-hidden", "16", "--n-layers", "2"],
    "flat": ["--model", "flat", "--n-embd", "8", "--n-hidden", "16", "--block-size", "3"],
    "transformer": ["--model", "transformer", "--n-embd", "8", "--n-head", "2", "--n-layers", "1"],
    "gru": ["--model", "gru", "--n-embd", "8", "--n-hidden", "16"],
    "ensemble": ["--model", "conv", "--n-embd", "8", "--n-hidden", "16", "--n-layers", "2", "--members", "2"],
}
record = {}
for name, args in runs.items():
    data = [] if "--data" in args else ["--data", str(work / "names.txt")]
    assert main(["train", "--out", str(work / name), *data, *common, *args]) == 0, name
    shutil.copy(work / name / "model.pt", here / f"{name}.pt")
    model, vocab, ck = load_model(here / f"{name}.pt")
    cols = label_columns(ck)
    labels = cols.parse([f"{cols.names[0]}={cols.values[0][0]}"]) if cols else None
    sampled = generate(model, vocab, SampleConfig(n=8, seed=0, cut_at=20), labels=labels)
    scores = score(model, vocab, names[:5])
    record[name] = {
        "labels": [f"{cols.names[0]}={cols.values[0][0]}"] if cols else [],
        "names": sampled,
        "scored": names[:5],
        "scores": scores,
    }
(here / "samples.json").write_text(json.dumps(record, indent=1) + "\n")
