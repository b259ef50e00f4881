"""Val loss against training time, one curve per run: what each step down the loss costs.

    python experiments/loss_vs_time.py LABEL=RUN ... [--out experiments/loss-vs-time.png]

RUN is a `train` run's directory, or its metrics.jsonl: one record per evaluation, with the training
seconds so far (evaluations not counted) and the val loss. An ensemble's (`train --members N`) has
one record per model: the val loss of the models so far as one ensemble, and their training seconds.
Times are this machine's: compare curves drawn from runs on one machine.
"""

import argparse
import json
import sys
from pathlib import Path

from wavenet_names.plots import plot_loss_against_time

HERE = Path(__file__).resolve().parent


def read_run(spec: str) -> tuple[str, list[dict]]:
    """LABEL=RUN -> (label, the run's evaluation records); ValueError naming the problem."""
    label, sep, where = spec.partition("=")
    if not sep or not label or not where:
        raise ValueError(f"{spec!r}: give LABEL=RUN, e.g. default=out/metrics.jsonl")
    return label, read_records(where)


def read_records(where: str) -> list[dict]:
    """The records of a run's metrics.jsonl (`where` is the file or its directory); ValueError naming
    the problem."""
    path = Path(where) / "metrics.jsonl" if Path(where).is_dir() else Path(where)
    try:
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as e:
        raise ValueError(f"{path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not a metrics.jsonl ({e.msg}, line {e.lineno})") from None
    if not records or not all({"seconds", "val_loss"} <= set(r) for r in records):
        raise ValueError(f"{path}: not a metrics.jsonl: no records with seconds and val_loss")
    return records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="LABEL=RUN", help="a label and a run directory or metrics.jsonl")
    parser.add_argument("--out", type=Path, default=HERE / "loss-vs-time.png", help="the PNG to write")
    args = parser.parse_args()
    try:
        runs = dict(read_run(spec) for spec in args.runs)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    plot_loss_against_time(runs, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
