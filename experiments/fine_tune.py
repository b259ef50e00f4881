"""From nothing, or from the shipped model: `train` against `train --init names` on short lists.

    python experiments/fine_tune.py --out out/fine-tune

The lists: faker's French and German first names (data/first-names-*.txt), 500 and 2,000 names of the
1920s drawn from data/names-by-decade.tsv (seed 0), and every fifth name of data/names.txt. Each list
trains from nothing with two recipes and from `names` with each fine-tune recipe below, one run at a
time; results.md gives each run's val (on the list's own split), its wall time and five of its names.
Finished runs are read back.
"""

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data"
SMALL = ["--eval-every", "100", "--patience", "4"]
RECIPES = {
    "from nothing, the defaults": SMALL,
    "from nothing, dropout 0.2": [*SMALL, "--dropout", "0.2"],
    "from nothing, dropout 0.2, patience 8": ["--eval-every", "100", "--patience", "8", "--dropout", "0.2"],
    "from names, lr 3e-4": ["--init", "names", "--lr", "3e-4", "--dropout", "0", *SMALL],
    "from names, lr 1e-3": ["--init", "names", "--lr", "1e-3", "--dropout", "0", *SMALL],
    "from names, lr 1e-3, dropout 0.2, patience 8": [
        "--init",
        "names",
        "--lr",
        "1e-3",
        "--dropout",
        "0.2",
        "--eval-every",
        "100",
        "--patience",
        "8",
    ],
    "from names, lr 3e-4, every 50, patience 8": [
        "--init",
        "names",
        "--lr",
        "3e-4",
        "--dropout",
        "0",
        "--eval-every",
        "50",
        "--patience",
        "8",
    ],
    "from names, lr 3e-4, dropout 0.1, patience 8": ["--init", "names", "--eval-every", "100", "--patience", "8"],
    "from names, lr 3e-4, dropout 0.1, patience 4": ["--init", "names", "--eval-every", "100", "--patience", "4"],
    "from names, its recipe: lr 3e-4, dropout 0.1, every 50, patience 4": ["--init", "names"],
}


def lists(out: Path) -> dict[str, Path]:
    """Each list's file, written into out/lists once."""
    (out / "lists").mkdir(parents=True, exist_ok=True)
    rows = [line.split("\t") for line in (DATA / "names-by-decade.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    twenties = sorted({name for name, _, decade in rows if decade == "1920"})
    names = (DATA / "names.txt").read_text(encoding="utf-8").splitlines()
    made = {
        "1920s, 500": random.Random(0).sample(twenties, 500),
        "1920s, 2,000": random.Random(0).sample(twenties, 2000),
        "names.txt, every fifth": names[::5],
    }
    paths = {"fr_FR first names": DATA / "first-names-fr_FR.txt", "de_DE first names": DATA / "first-names-de_DE.txt"}
    for name, words in made.items():
        paths[name] = out / "lists" / (name.replace(", ", "-").replace(",", "").replace(" ", "-") + ".txt")
        paths[name].write_text("\n".join(words) + "\n", encoding="utf-8")
    return paths


def run(data: Path, recipe: list[str], directory: Path) -> dict:
    """One run, or the one already in `directory`: its metrics, wall seconds and five names (drawn
    again if a result has none: the draw changed since some runs were made)."""
    done = directory / "result.json"
    if done.exists():
        result = json.loads(done.read_text(encoding="utf-8"))
        if "names" not in result:
            result["names"] = five_names(directory)
            done.write_text(json.dumps(result), encoding="utf-8")
        return result
    start = time.perf_counter()
    command = [sys.executable, "-m", "wavenet_names", "train", "--data", str(data), "--out", str(directory)]
    subprocess.run([*command, "--overwrite", *recipe], check=True, capture_output=True)
    wall = time.perf_counter() - start
    metrics = json.loads((directory / "metrics.json").read_text(encoding="utf-8"))
    result = {"val": metrics["val_loss"], "steps": metrics["steps"], "wall": wall, "names": five_names(directory)}
    done.write_text(json.dumps(result), encoding="utf-8")
    return result


def five_names(directory: Path) -> list[str]:
    sampled = subprocess.run(
        [sys.executable, "-m", "wavenet_names", "sample", "--checkpoint", str(directory), "-n", "5", "--seed", "1"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    return [line.rstrip(" *+") for line in sampled]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/fine-tune"))
    args = parser.parse_args()
    lines = [
        "| list | names | recipe | val | steps | wall s | five names |",
        "| --- | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for name, data in lists(args.out).items():
        size = len(set(data.read_text(encoding="utf-8").splitlines()))  # its items: train drops repeats
        for recipe, options in RECIPES.items():
            slug = f"{data.stem}/{recipe.replace(', ', '-').replace(' ', '-')}"
            r = run(data, options, args.out / slug)
            figures = f"{r['val']:.4f} | {r['steps']:,} | {r['wall']:.0f}"
            lines.append(f"| {name} | {size:,} | {recipe} | {figures} | {', '.join(r['names'])} |")
            (args.out / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
            print(lines[-1], flush=True)


if __name__ == "__main__":
    main()
