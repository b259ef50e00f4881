"""Turn pytest-benchmark JSON into bench/RESULTS.md (a table per device) and a speedup plot.

    pytest bench/ --benchmark-json=bench/results-cpu.json
    python bench/report.py bench/results-cpu.json [bench/results-cuda.json] [--speedup-log FILE]

--speedup-log adds the output of bench/speedup.py verbatim. A device with no JSON is reported as
"not yet measured": the report only ever shows numbers that were measured.
"""

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent


def load(paths: list[Path]) -> list[dict]:
    rows = []
    for path in paths:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            machine = data["machine_info"]
            for bench in data["benchmarks"]:
                rows.append(
                    {
                        **bench["extra_info"],
                        "median": bench["stats"]["median"],
                        "group": bench["group"],
                        "cpu": machine.get("cpu", {}).get("brand_raw", "?"),
                        "source": _source(data),
                    }
                )
        except (OSError, ValueError, KeyError) as e:
            raise SystemExit(f"error: {path}: not a pytest-benchmark JSON file ({e})") from None
    return rows


def _source(data: dict) -> str:
    """Which code and torch were measured, and when: what pytest-benchmark and bench/conftest.py recorded."""
    commit = data.get("commit_info", {})
    parts = [f"torch {data['machine_info']['torch']}"] if "torch" in data["machine_info"] else []
    if commit.get("id"):
        parts.append(f"commit {commit['id'][:7]}{' with uncommitted changes' if commit.get('dirty') else ''}")
    return ", ".join(parts + [data.get("datetime", "")[:10]])


def pairs(rows: list[dict], section: str, device: str, variant: str = "fp32") -> dict[int, dict[str, dict]]:
    """{block: {kind: row}} for one table."""
    table = defaultdict(dict)
    for row in rows:
        if row["group"].startswith(section) and row["device"] == device and row.get("variant", "fp32") == variant:
            table[row["block"]][row["kind"]] = row
    return dict(sorted(table.items()))


def training_table(rows, device, variant="fp32") -> list[str]:
    table = pairs(rows, "train-step", device, variant)
    if not table:
        return []
    header = "| block | per-position ms | conv ms | per-position pos/s | conv pos/s | speedup | node limit |"
    lines = [
        f"Training step ({variant}), forward + backward over every position of 256 names:",
        "",
        header,
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for block, kinds in table.items():
        if {"per_position", "conv"} <= kinds.keys():
            p, c = kinds["per_position"], kinds["conv"]
            lines.append(
                f"| {block} | {p['median'] * 1e3:.1f} | {c['median'] * 1e3:.1f} | "
                f"{p['positions'] / p['median']:,.0f} | {c['positions'] / c['median']:,.0f} | "
                f"{p['median'] / c['median']:.2f}x | {(block - 1) / math.log2(block):.2f}x |"
            )
    return lines + [""]


def eval_table(rows, device) -> list[str]:
    kinds = pairs(rows, "eval-val", device).get(8, {})
    if len(kinds) < 2:
        return []
    p, c = kinds["per_position"], kinds["conv"]
    return [
        "Evaluation of the whole validation split (block 8):",
        "",
        "| per-position ms | conv ms | per-position positions/s | conv positions/s | speedup |",
        "| ---: | ---: | ---: | ---: | ---: |",
        f"| {p['median'] * 1e3:.1f} | {c['median'] * 1e3:.1f} | {p['positions'] / p['median']:,.0f} | "
        f"{c['positions'] / c['median']:,.0f} | {p['median'] / c['median']:.2f}x |",
        "",
    ]


def sampling_table(rows, device) -> list[str]:
    table = pairs(rows, "sample", device)
    if not table:
        return []
    lines = [
        "Sampling (8 names at a time, seed 0), milliseconds per name:",
        "",
        "| block | recompute each window | cached (Fast WaveNet) | speedup |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for block, kinds in table.items():
        if {"recompute", "cached"} <= kinds.keys():
            r, c = kinds["recompute"], kinds["cached"]
            lines.append(
                f"| {block} | {r['median'] / r['names'] * 1e3:.2f} | {c['median'] / c['names'] * 1e3:.2f} | "
                f"{r['median'] / c['median']:.1f}x |"
            )
    return lines + [""]


def device_section(rows, device: str) -> list[str]:
    mine = [r for r in rows if r["device"] == device]
    title = f"## {device.upper()}"
    if not mine:
        return [title, "", "Not yet measured.", ""]
    where = mine[0]["gpu"] if device == "cuda" else mine[0]["cpu"]
    lines = [title, "", f"Measured on {where} ({mine[0]['source']}).", ""]
    lines += training_table(rows, device) + eval_table(rows, device) + sampling_table(rows, device)
    for variant in ("bf16", "compile"):
        lines += training_table(rows, device, variant)
    return lines


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    blocks = [8, 16, 32, 64, 128, 256]
    ax.plot(blocks, [(b - 1) / math.log2(b) for b in blocks], "k--", label="node-count limit (2^L - 1) / L")
    for device in ("cpu", "cuda"):
        table = pairs(rows, "train-step", device)
        points = [(b, k["per_position"]["median"] / k["conv"]["median"]) for b, k in table.items() if len(k) == 2]
        if points:
            ax.plot(*zip(*points, strict=True), "o-", label=f"measured, {device}, 256 names")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(blocks, [str(b) for b in blocks])
    ax.set_yticks([0.5, 1, 2, 5, 10, 20, 50], ["0.5x", "1x", "2x", "5x", "10x", "20x", "50x"])
    ax.minorticks_off()
    ax.set_xlabel("block size (receptive field)")
    ax.set_ylabel("training-step speedup, conv / per-position")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, nargs="+", help="pytest-benchmark JSON files")
    parser.add_argument("--speedup-log", type=Path, action="append", default=[], help="output of bench/speedup.py")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--plot", type=Path, default=HERE / "speedup.png")
    args = parser.parse_args()
    rows = load(args.json)
    lines = [
        "# Benchmark results",
        "",
        "Made by `bench/report.py` from `pytest bench/ --benchmark-json=...`: medians of 5 rounds after a "
        "warm-up, the lecture's sizes (n_embd 24, n_hidden 128), the same weights in both models. "
        "Speedups are ratios of medians from the same run.",
        "",
        f"![speedup]({args.plot.name})",
        "",
    ]
    for device in ("cpu", "cuda"):
        lines += device_section(rows, device)
    for log in args.speedup_log:
        lines += [f"## `bench/speedup.py` ({log.name})", "", "```", log.read_text(encoding="utf-8").strip(), "```", ""]
    args.out.write_text("\n".join(lines), encoding="utf-8")
    plot(rows, args.plot)
    print(f"wrote {args.out} and {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
