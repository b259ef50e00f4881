"""How close a training step comes to this machine's arithmetic peak, measured in one run.

    python bench/roofline.py [--preset default best] [--steps 40] [--chart bench/roofline.png] [--candidates]

For each model (the default `train`'s, and `--preset best`'s), at its default batch, on the threads
that training uses:
- the machine's fp32 peak: the GFLOP/s of a 2048 x 2048 matrix product; and the best the model's
  own products could do: each matrix product of its step, at its own shape, timed alone;
- the FLOPs of a training step per position trained, counted by
  torch.utils.flop_counter.FlopCounterMode over one step (the matrix products of the forward and
  the backward: the rest, elementwise work and the AdamW update, is a few FLOPs a byte and is not
  counted), and counted again by hand from the shapes of the matrix products that the profiler saw
  in the profiled steps: the two agree to the rounding that a step's batch of names brings;
- the step's achieved GFLOP/s and its fraction of each peak;
- where the step's wall time goes, from torch.profiler: matrix products, elementwise and
  normalisation, data movement (gathers, scatters, copies, fills), the optimizer, and the rest,
  which is dispatch (Python, autograd's engine, PyTorch's per-op overhead, and views).

Read the breakdown before optimising: a step's FLOPs are all in its matrix products, so the fraction
of the peak is the share of its time spent in them, times how fast they run. --candidates then
measures two changes to the default step, each against the step as it is, in turn.
"""

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from wavenet_names.configuration import settings
from wavenet_names.data import NAMES_TXT
from wavenet_names.splits import Splits
from wavenet_names.training import Trainer

PEAK_SIZE = 2048
MATMULS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addmv", "aten::mv"}
MOVEMENT = {
    "aten::copy_", "aten::index_select", "aten::index", "aten::index_add_", "aten::index_put_", "aten::scatter_add_",
    "aten::scatter_", "aten::gather", "aten::cat", "aten::embedding_dense_backward", "aten::nonzero_static",
    "aten::nonzero", "aten::fill_", "aten::zero_", "aten::clone", "aten::masked_select", "aten::_index_put_impl_",
    "aten::embedding", "aten::repeat", "aten::flip",
}  # fmt: skip
DISPATCH = {  # no work of their own: views, allocations, and the engine's bookkeeping
    "aten::empty", "aten::empty_strided", "aten::empty_like", "aten::as_strided", "aten::view", "aten::slice",
    "aten::select", "aten::t", "aten::transpose", "aten::expand", "aten::unsqueeze", "aten::squeeze",
    "aten::reshape", "aten::_reshape_alias", "aten::alias", "aten::detach", "aten::permute", "aten::unbind",
    "aten::split", "aten::chunk", "aten::narrow", "aten::flatten", "aten::unflatten", "aten::resize_",
    "aten::lift_fresh", "aten::result_type", "aten::_unsafe_view", "aten::contiguous", "aten::to", "aten::_to_copy",
}  # fmt: skip
CATEGORIES = ("matrix products", "elementwise and normalisation", "data movement", "optimizer", "dispatch and the rest")


def trainer(preset: str | None, splits: Splits, **options) -> Trainer:
    model_config, config = settings(options, None, None if preset == "default" else preset)
    return Trainer(model_config, config, splits)


def step_rate(train: Trainer, steps: int) -> tuple[float, float]:
    """Positions per second and seconds per step, the median of 5 runs of `steps` steps."""
    rates, seconds = [], []
    for _ in range(5):
        start, positions = time.perf_counter(), 0
        for _ in range(steps):
            positions += train.train_step()[1]
        elapsed = time.perf_counter() - start
        rates.append(positions / elapsed)
        seconds.append(elapsed / steps)
    return statistics.median(rates), statistics.median(seconds)


def gflops_of_product(m: int, k: int, n: int, repeats: int = 20) -> float:
    """GFLOP/s of an (m, k) @ (k, n) fp32 product, the best of `repeats`."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * m * k * n / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def counted_flops(train: Trainer) -> tuple[float, int]:
    """FlopCounterMode's count of one training step, and the positions it trained."""
    with FlopCounterMode(display=False) as counter:
        _, positions = train.train_step()
    return counter.get_total_flops(), positions


def profiled(train: Trainer, steps: int) -> dict:
    """torch.profiler over `steps` steps: each aten op's self time by category, the matrix products'
    shapes, and the wall time of the profiled steps."""
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        start, positions = time.perf_counter(), 0
        for _ in range(steps):
            positions += train.train_step()[1]
        wall = time.perf_counter() - start
    events = [e for e in prof.events() if e.name.startswith(("aten::", "Optimizer."))]
    optimizer = [(e.time_range.start, e.time_range.end) for e in events if e.name.startswith("Optimizer.")]
    seconds = dict.fromkeys(CATEGORIES, 0.0)
    products = []  # (m, k, n) of every matrix product
    for e in events:
        if not e.name.startswith("aten::"):
            continue
        self_seconds = e.self_cpu_time_total / 1e6
        start = e.time_range.start
        if any(a <= start <= b for a, b in optimizer):
            seconds["optimizer"] += self_seconds
        elif e.name in MATMULS:
            seconds["matrix products"] += self_seconds
            products.append(_mkn(e.name, e.input_shapes))
        elif e.name in MOVEMENT:
            seconds["data movement"] += self_seconds
        elif e.name in DISPATCH:
            seconds["dispatch and the rest"] += self_seconds
        else:
            seconds["elementwise and normalisation"] += self_seconds
    ops = sum(1 for e in events if e.name.startswith("aten::"))
    return {"seconds": seconds, "products": products, "wall": wall, "steps": steps, "ops": ops, "positions": positions}


def _mkn(name: str, shapes: list) -> tuple[int, int, int]:
    """The (m, k, n) of a matrix product from its input shapes (addmm's first input is the bias)."""
    a, b = (shapes[1], shapes[2]) if name.startswith(("aten::addmm", "aten::baddbmm")) else (shapes[0], shapes[1])
    batch = a[0] if len(a) == 3 else 1
    return batch * a[-2], a[-1], b[-1]


def measure(preset: str, splits: Splits, steps: int, peak: float) -> dict:
    train = trainer(preset, splits)
    for _ in range(20):  # warm: allocations, the first batches
        train.train_step()
    flops, positions = counted_flops(train)
    rate, step_seconds = step_rate(train, steps)
    profile_ = profiled(train, steps)
    products = profile_["products"]
    by_hand = sum(2 * m * k * n for m, k, n in products) / profile_["positions"]  # per position, other batches
    distinct = {shape: products.count(shape) for shape in set(products)}
    alone = sum(count * 2 * m * k * n / (gflops_of_product(m, k, n) * 1e9) for (m, k, n), count in distinct.items())
    product_peak = sum(count * 2 * m * k * n for (m, k, n), count in distinct.items()) / alone / 1e9
    per_position = flops / positions
    achieved = per_position * rate / 1e9
    # each category's share of the step's own (unprofiled) wall time; what the profiled ops do not
    # account for (the profiler's own cost excepted) is dispatch
    profiled_step = profile_["wall"] / profile_["steps"]
    shares = {name: s / profile_["steps"] / profiled_step for name, s in profile_["seconds"].items()}
    shares["dispatch and the rest"] += 1 - sum(shares.values())
    return {
        "preset": preset,
        "batch": train.config.batch_size,
        "positions_per_step": positions,
        "mflop_per_position": per_position / 1e6,
        "flops_counted": per_position,
        "flops_by_hand": by_hand,
        "positions_per_second": rate,
        "step_ms": 1000 * step_seconds,
        "ops_per_step": profile_["ops"] / profile_["steps"],
        "steps": profile_["steps"],
        "gflops": achieved,
        "peak": peak,
        "product_peak": product_peak,
        "of_peak": achieved / peak,
        "of_product_peak": achieved / product_peak,
        "shares": shares,
    }


def table(rows: list[dict]) -> str:
    lines = [
        f"fp32 peak ({PEAK_SIZE} x {PEAK_SIZE} product, {torch.get_num_threads()} threads): "
        f"{rows[0]['peak']:.1f} GFLOP/s",
        "",
        "| model | batch | MFLOP / position | positions/s | step ms | ops / step | GFLOP/s | of the peak "
        "| of its products' peak | products' peak GFLOP/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['preset']} | {r['batch']} | {r['mflop_per_position']:.3f} | {r['positions_per_second']:,.0f} | "
            f"{r['step_ms']:.2f} | {r['ops_per_step']:,.0f} | {r['gflops']:.1f} | {r['of_peak']:.3f} | "
            f"{r['of_product_peak']:.3f} | "
            f"{r['product_peak']:.1f} |"
        )
    lines += ["", "| model | " + " | ".join(CATEGORIES) + " |", "| --- |" + " ---: |" * len(CATEGORIES)]
    for r in rows:
        lines.append(f"| {r['preset']} | " + " | ".join(f"{r['shares'][c]:.0%}" for c in CATEGORIES) + " |")
    counts = "; ".join(
        f"{r['preset']}: {r['flops_counted'] / 1e6:.4f} MFLOP by FlopCounterMode, {r['flops_by_hand'] / 1e6:.4f} "
        f"by hand over the {r['steps']} profiled steps"
        for r in rows
    )
    return "\n".join(lines) + f"\n\nFLOPs per position, counted twice: {counts}.\n"


def chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.5 * len(rows)))
    colours = ("#3b7dd8", "#e8a33c", "#7bbf6a", "#b86bc4", "#9a9a9a")
    for y, r in enumerate(rows):
        left = 0.0
        for name, colour in zip(CATEGORIES, colours, strict=True):
            share = r["shares"][name]
            ax.barh(y, share, left=left, color=colour, label=name if y == 0 else None)
            left += share
    ax.set_yticks(range(len(rows)), [f"{r['preset']} ({r['of_peak']:.2f} of peak)" for r in rows])
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of a training step's wall time")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.45), ncol=3, fontsize=8, frameon=False)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def interleaved(a: Trainer, b: Trainer, rounds: int = 25, steps: int = 10) -> float:
    """b's positions/s over a's, the median of `rounds` pairs of `steps` steps each, taken in turn."""

    def rate(train: Trainer) -> float:
        start, positions = time.perf_counter(), 0
        for _ in range(steps):
            positions += train.train_step()[1]
        return positions / (time.perf_counter() - start)

    return statistics.median(rate(b) / rate(a) for _ in range(rounds))


def update_ops(train: Trainer) -> int:
    """The aten ops of one optimizer update."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train.optimizer.step()
    return sum(1 for e in prof.events() if e.name.startswith("aten::"))


def candidates(splits: Splits) -> str:
    """Two candidates for the default model's step, each against the step as it is, in turn: AdamW's
    fused CPU kernel, and the step compiled (train --compile), after its compilation."""
    base, fused = trainer("default", splits), trainer("default", splits)
    groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in fused.optimizer.param_groups]
    fused.optimizer = torch.optim.AdamW(groups, lr=fused.config.lr, fused=True)
    start = time.perf_counter()
    compiled = trainer("default", splits, compile=True)
    for _ in range(100):  # every bucket's shape compiled
        compiled.train_step()
    compiling = time.perf_counter() - start
    for train in (base, fused):
        for _ in range(20):
            train.train_step()
    fused_ratio = interleaved(base, fused)  # both trained on the same batches, from the same weights
    apart = max(
        (a - b).abs().max().item() for a, b in zip(base.model.parameters(), fused.model.parameters(), strict=True)
    )
    steps = base.step
    return (
        f"fused AdamW: {fused_ratio:.2f}x the positions/s ({update_ops(fused)} ops an update, against "
        f"{update_ops(base)}); after {steps} steps on the same batches, the weights differ by up to {apart:.1e}\n"
        f"--compile: {interleaved(base, compiled):.2f}x, after {compiling:.0f} s of compiling and warming\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", nargs="+", default=["default", "best"], help="default, best")
    parser.add_argument("--steps", type=int, default=40, help="steps per timing")
    parser.add_argument("--chart", type=Path, default=None, help="write the breakdown's bar chart here")
    parser.add_argument("--candidates", action="store_true", help="then fused AdamW and --compile, each in turn")
    args = parser.parse_args()
    splits = Splits.read(NAMES_TXT)
    peak = gflops_of_product(PEAK_SIZE, PEAK_SIZE, PEAK_SIZE)
    rows = [measure(preset, splits, args.steps, peak) for preset in args.preset]
    print(table(rows), end="")
    if args.chart:
        chart(rows, args.chart)
    if args.candidates:
        print(candidates(splits), end="")


if __name__ == "__main__":
    main()
