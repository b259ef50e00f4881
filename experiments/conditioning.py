"""What labels buy a model of names: loss, and how faithfully samples follow their sex and decade.

    wavenet-names train --data data/names-by-decade.tsv --out out/labels
    wavenet-names train --data data/names-by-decade.tsv --no-labels --out out/no-labels
    python experiments/conditioning.py out/labels out/no-labels > experiments/conditioning/default.md

(experiments/conditioning/best.md is the same with `--preset best` added to both `train`s.)

The first run is a conditional model (its labels sex and decade), the second the same model trained on
the same file and split with the labels hidden. Samples are drawn with a fixed seed, N of each:
- sex: of the names sampled with sex=F (then M) that occur in the data, the share that the data
  records for that sex (a name given to both counts for both; the share given to that sex alone is
  shown too);
- era: for decade=D, the share of sampled names that occur in the data for decade D, against the
  same share of unconditioned samples (the conditional model with no label, and the model without
  labels).
A markdown report on standard output.
"""

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch

from wavenet_names.checkpoint import label_columns, load_model
from wavenet_names.choosing import SampleConfig
from wavenet_names.labels import read_items
from wavenet_names.sampling import generate

N = 1000
DECADES = ("1900", "1950", "2000")
SHOWN = 8  # sample names shown per label


def sampled(model, vocab, columns, labels: dict[str, str], n: int = N, seed: int = 0) -> list[str]:
    """n names from `model` with these labels ({"sex": "F"}), the rest unknown; no labels for a model
    without them (columns None)."""
    given = torch.from_numpy(columns.parse([f"{k}={v}" for k, v in labels.items()])) if columns is not None else None
    return generate(model, vocab, SampleConfig(n=n, seed=seed), labels=given)


def records(data: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """The data's sexes and decades of each name: {name: {"F", "M"}}, {name: {"1880", ...}}."""
    table = read_items(data)
    sexes, decades = defaultdict(set), defaultdict(set)
    sex, decade = table.columns.index("sex"), table.columns.index("decade")
    for item, fields in zip(table.items, table.fields, strict=True):
        sexes[item].add(fields[sex])
        decades[item].add(fields[decade])
    return sexes, decades


def share(names: list[str], test) -> tuple[str, int]:
    """The share of `names` in the data (test(name) is not None) for which test(name) holds, as a
    percentage ("-" when none is in the data), and how many are in the data."""
    known = [test(name) for name in names if test(name) is not None]
    return (f"{sum(known) / len(known):.1%}" if known else "-"), len(known)


def report(labelled_dir: Path, hidden_dir: Path) -> str:
    model, vocab, checkpoint = load_model(labelled_dir / "model.pt")
    columns = label_columns(checkpoint)
    if columns is None or set(columns.names) != {"sex", "decade"}:
        raise ValueError(f"{labelled_dir}: not a model labelled with sex and decade (train it on names-by-decade.tsv)")
    hidden, hidden_vocab, _ = load_model(hidden_dir / "model.pt")
    sexes, decades = records(Path(checkpoint["train_config"]["data"]))
    lines = ["## Loss", "", "| model | train | val |", "| --- | ---: | ---: |"]
    for name, directory in (("with labels", labelled_dir), ("labels hidden", hidden_dir)):
        metrics = json.loads((directory / "metrics.json").read_text())
        lines.append(f"| {name} | {metrics['train_loss']:.4f} | {metrics['val_loss']:.4f} |")

    unlabelled = sampled(model, vocab, columns, {})
    no_labels = sampled(hidden, hidden_vocab, None, {})
    lines += [
        "",
        f"## Sex: {N:,} names sampled per label, and {N:,} with no label",
        "",
        "| label | in the data | recorded for that sex | for that sex alone | no label: recorded for it |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    shown = {}
    for sex in ("F", "M"):
        names = sampled(model, vocab, columns, {"sex": sex})
        shown[f"sex={sex}"] = names
        recorded, known = share(names, lambda w, s=sex: s in sexes[w] if w in sexes else None)
        alone, _ = share(names, lambda w, s=sex: sexes[w] == {s} if w in sexes else None)
        base, _ = share(unlabelled, lambda w, s=sex: s in sexes[w] if w in sexes else None)
        lines.append(f"| sex={sex} | {known / N:.1%} | **{recorded}** | {alone} | {base} |")

    lines += [
        "",
        f"## Era: {N:,} names sampled per label, and {N:,} unconditioned",
        "",
        "| decade D | decade=D: in the data for D | no label | model without labels |",
        "| --- | ---: | ---: | ---: |",
    ]
    for decade in DECADES:
        names = sampled(model, vocab, columns, {"decade": decade})
        shown[f"decade={decade}"] = names
        in_decade = [sum(decade in decades.get(w, ()) for w in s) / N for s in (names, unlabelled, no_labels)]
        lines.append(f"| {decade} | **{in_decade[0]:.1%}** | {in_decade[1]:.1%} | {in_decade[2]:.1%} |")
    for sex, decade in (("F", "1920"), ("M", "2000")):
        shown[f"sex={sex} decade={decade}"] = sampled(model, vocab, columns, {"sex": sex, "decade": decade})
    shown["no label"] = unlabelled

    lines += ["", f"## The first {SHOWN} samples of each (seed 0)", "", "| labels | samples |", "| --- | --- |"]
    lines += [f"| {label} | {', '.join(names[:SHOWN])} |" for label, names in shown.items()]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("labelled", type=Path, help="the run trained on names-by-decade.tsv with its labels")
    parser.add_argument("hidden", type=Path, help="the run trained on the same file with --no-labels")
    args = parser.parse_args()
    try:
        print(report(args.labelled, args.hidden), end="")
    except (OSError, ValueError) as e:
        print(f"conditioning.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
