"""This checkout against an earlier commit, side by side in one run: a change that should cost
nothing (a refactor) is measured to cost nothing.

    python bench/versions.py REV [--blocks 8 64 256] [--names 256] [--repeats 9]

REV's package is taken out of git into a temporary folder and imported under another name, beside
this one. For each block (n_embd 24, n_hidden 128, the same weights in both), it times ConvWaveNet's
training step (forward and backward on --names names), then the default model's evaluation of the
validation split and cached generation of 64 names, each the median of --repeats interleaved runs.
Prints one line each: this checkout's rate, REV's, and their ratio (above 1: this checkout faster).
"""

import argparse
import importlib
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workloads  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def package_at(rev: str, folder: Path):
    """The wavenet_names package of commit `rev`, imported as wavenet_names_at_rev."""
    archive = subprocess.run(["git", "archive", rev, "wavenet_names"], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    (folder / "wavenet_names").rename(folder / "wavenet_names_at_rev")
    sys.path.insert(0, str(folder))
    for stale in [name for name in sys.modules if name.split(".")[0] == "wavenet_names_at_rev"]:
        del sys.modules[stale]  # an earlier call's, in this process
    return importlib.import_module("wavenet_names_at_rev")


def workloads_of(package, n_layers: int, words: list[str], vocab, names: int) -> dict:
    """What to time of one package: its conv model (from the same tree weights), a training step on
    `names` names, and, at n_layers 3, evaluation of the validation split and cached generation."""
    torch.manual_seed(0)
    tree = package.HierarchicalMLP(len(vocab), workloads.N_EMBD, workloads.N_HIDDEN, n_layers)
    model = package.conv_from_tree(tree)
    batch = workloads.repeat(words, names)
    idx, targets = package.pad_batch(*package.encode_names(batch, vocab), model.block_size)

    def step():
        model.train()
        model.zero_grad(set_to_none=True)
        model(idx, targets)[1].backward()

    return {"model": model, "step": step, "positions": int((targets != -1).sum())}


def val_batches(package, model, words: list[str]):
    """The val split of `words` as `package` batches it for `model`: Splits moved to splits.py, and
    models.batches_for took over its batches(), when each kind of model got its own module."""
    try:
        splits = importlib.import_module(package.__name__ + ".splits")
    except ModuleNotFoundError:  # before
        return (
            importlib.import_module(package.__name__ + ".training")
            .Splits.from_words(words)
            .batches("val", model, "cpu")
        )
    models = importlib.import_module(package.__name__ + ".models")
    return models.batches_for(model, splits.Splits.from_words(words), "val", "cpu")


def evaluator(package):
    """`package`'s evaluate(model, batches): in scoring.py, or before, in training.py."""
    scoring = importlib.import_module(package.__name__ + ".scoring")
    return getattr(scoring, "evaluate", None) or importlib.import_module(package.__name__ + ".training").evaluate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the commit to compare with, e.g. HEAD~3 or a hash")
    parser.add_argument("--blocks", type=int, nargs="+", default=[8, 64, 256])
    parser.add_argument("--names", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    if any(b < 2 or b & (b - 1) for b in args.blocks):
        parser.exit(2, f"{parser.prog}: error: --blocks are powers of two from 2, got {args.blocks}\n")
    import wavenet_names as current

    with tempfile.TemporaryDirectory() as folder:
        try:
            earlier = package_at(args.rev, Path(folder))
        except subprocess.CalledProcessError as e:
            parser.exit(2, f"{parser.prog}: error: no package at {args.rev}: {e.stderr.decode().strip()}\n")
        splits = workloads.splits()
        words, vocab = splits.train, splits.vocab
        print(f"this checkout / {args.rev}, {torch.get_num_threads()} threads:")
        for block in args.blocks:
            n_layers = block.bit_length() - 1
            mine, theirs = (workloads_of(p, n_layers, words, vocab, args.names) for p in (current, earlier))
            times = workloads.interleaved_medians({"mine": mine["step"], "theirs": theirs["step"]}, args.repeats)
            rates = {k: mine["positions"] / t for k, t in times.items()}
            print(
                f"  training step, block {block}, {args.names} names: {rates['mine']:,.0f} / "
                f"{rates['theirs']:,.0f} positions/s = {rates['mine'] / rates['theirs']:.3f}x"
            )
        mine, theirs = (workloads_of(p, 3, words, vocab, args.names) for p in (current, earlier))
        val = {}
        for name, package, model in (("mine", current, mine["model"]), ("theirs", earlier, theirs["model"])):
            batches, evaluate = val_batches(package, model, splits.train + splits.val + splits.test), evaluator(package)
            val[name] = (lambda e=evaluate, m=model, b=batches: e(m, b)), batches.n_examples
        times = workloads.interleaved_medians({k: fn for k, (fn, _) in val.items()}, args.repeats)
        n = val["mine"][1]
        print(
            f"  evaluation of the val split: {n / times['mine']:,.0f} / {n / times['theirs']:,.0f} positions/s "
            f"= {times['theirs'] / times['mine']:.3f}x"
        )
        config = {"mine": current.SampleConfig(n=64, seed=0, cut_at=20)}
        limit = "cut_at" if "cut_at" in earlier.SampleConfig.__dataclass_fields__ else "max_len"  # its earlier name
        config["theirs"] = earlier.SampleConfig(n=64, seed=0, **{limit: 20})
        sample = {
            "mine": lambda: current.generate(mine["model"].eval(), vocab, config["mine"]),
            "theirs": lambda: earlier.generate(theirs["model"].eval(), earlier.Vocab(vocab.chars), config["theirs"]),
        }
        times = workloads.interleaved_medians(sample, args.repeats)
        print(
            f"  cached generation, 64 names: {64 / times['mine']:,.0f} / {64 / times['theirs']:,.0f} names/s "
            f"= {times['theirs'] / times['mine']:.3f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
