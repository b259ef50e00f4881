"""What each model of an ensemble adds: the val loss of its first 1, 2, ... models, over several runs.

    python experiments/ensemble_size.py OUT ...

OUT is the directory of a `train --members N` run, or its metrics.jsonl: for k = 1 to N, the val loss
of the first k models as one ensemble, and their training seconds. Given the runs of one setting
from several seeds, each row is their mean, with its spread (largest minus smallest) and its change
from the row above: a markdown table, on standard output.
"""

import argparse
import sys

from loss_vs_time import read_records  # this folder's: the same metrics.jsonl


def table(runs: dict[str, list[dict]]) -> str:
    """One row per ensemble size that every run reached."""
    for where, records in runs.items():
        if not all("members" in r for r in records):
            raise ValueError(f"{where}: not an ensemble's metrics.jsonl (train --members N writes one)")
    sizes = min(len(records) for records in runs.values())
    lines = [
        f"| models | val (mean of {len(runs)}) | change | spread | per run | training seconds (mean) |",
        "| ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    previous = None
    for k in range(sizes):
        vals = [records[k]["val_loss"] for records in runs.values()]
        mean = sum(vals) / len(vals)
        seconds = sum(records[k]["seconds"] for records in runs.values()) / len(runs)
        change = "-" if previous is None else f"{mean - previous:+.4f}"
        per_run = ", ".join(f"{v:.4f}" for v in vals)
        lines.append(f"| {k + 1} | {mean:.4f} | {change} | {max(vals) - min(vals):.4f} | {per_run} | {seconds:.0f} |")
        previous = mean
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="OUT", help="a train --members run's directory or metrics.jsonl")
    args = parser.parse_args()
    try:
        print(table({where: read_records(where) for where in args.runs}), end="")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
