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
measures changes to the default step, each against the step as it is, in turn: the optimizer
unfused, the layer's backward written out by hand, a faster tanh, and the step compiled.
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
from wavenet_names.layers import BatchNorm
from wavenet_names.packing import ExactLayout
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
    """The aten ops of one optimizer update (after a step, so that every parameter has a gradient)."""
    train.train_step()
    return ops_of(train.optimizer.step)


def ops_of(fn) -> int:
    """The aten ops that one call of fn runs."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(1 for e in prof.events() if e.name.startswith("aten::"))


class HandWrittenLayer(torch.autograd.Function):
    """A candidate: the default model's layer over an exact layout with one shared start row (W1 h[t]
    for every row, W0 h[t - d] for the rows that reach into their own name, W0 h[0] for the rest;
    the lecture's BatchNorm; tanh) as one autograd function with its backward written out, so that
    autograd's engine runs one node a layer, not a dozen. fast_tanh: tanh as 2 sigmoid(2x) - 1,
    which this CPU computes several times faster than torch.tanh."""

    @staticmethod
    def forward(ctx, h, weight, gamma, beta, far, dilation: int, norm: BatchNorm, fast_tanh: bool):
        w0, w1, h0 = weight[..., 0], weight[..., 1], h[0]  # h[0]: the shared row over the padding
        pre = torch.addmm(w0 @ h0, h, w1.t())  # (rows, n_conv): as if every left input were h[0]
        left = None if far is None else h.index_select(0, far - dilation) - h0  # (n_far, n_in)
        if far is not None:
            pre.index_add_(0, far, left @ w0.t())  # by linearity: + W0 h[t - d] - W0 h[0]
        shrink = (len(h) - 1) / len(h)  # the lecture's unbiased variance, as layers.BatchNorm
        gamma_, eps = gamma * shrink**0.5, norm.eps * shrink
        y, mean, invstd = torch.native_batch_norm(
            pre, gamma_, beta, norm.running_mean, norm.running_var, True, norm.momentum, eps
        )
        out = torch.sigmoid(y.mul_(2)).mul_(2).sub_(1) if fast_tanh else torch.tanh(y)
        ctx.save_for_backward(h, weight, left, pre, gamma_, mean, invstd, out, far)
        ctx.dilation, ctx.eps, ctx.scale = dilation, eps, shrink**0.5
        return out

    @staticmethod
    def backward(ctx, grad_out):
        h, weight, left, pre, gamma_, mean, invstd, out, far = ctx.saved_tensors
        w0, w1 = weight[..., 0], weight[..., 1]
        grad_y = torch.ops.aten.tanh_backward(grad_out, out)
        grad_pre, grad_gamma, grad_beta = torch.ops.aten.native_batch_norm_backward(
            grad_y, pre, gamma_, None, None, mean, invstd, True, ctx.eps, [True, True, True]
        )
        total = grad_pre.sum(0)  # (n_conv,): every row read h[0] through W0 first
        grad_w = torch.empty_like(weight)
        grad_w[..., 1] = grad_pre.t() @ h
        grad_h = grad_pre @ w1  # (rows, n_in)
        if far is None:
            grad_w[..., 0] = torch.outer(total, h[0])
            grad_h[0] += w0.t() @ total
        else:
            grad_far = grad_pre.index_select(0, far)  # (n_far, n_conv)
            grad_left = grad_far @ w0
            grad_h.index_add_(0, far - ctx.dilation, grad_left)
            grad_w[..., 0] = torch.addr(grad_far.t() @ left, total, h[0])
            grad_h[0] += w0.t() @ total - grad_left.sum(0)
        return grad_h, grad_w, grad_gamma * ctx.scale, grad_beta, None, None, None, None


def hand_written(train: Trainer, fast_tanh: bool) -> Trainer:
    """`train` with every layer's training forward on the default layout replaced by HandWrittenLayer."""
    lecture = train.model.blocks.lecture  # the layer HandWrittenLayer writes out: BatchNorm and tanh alone
    for layer in train.model.layers:

        def forward_packed(h, layout, h_labels=None, layer=layer, own=layer.forward_packed):
            if not (layer.training and layout.shared and isinstance(layout, ExactLayout) and lecture):
                return own(h, layout, h_labels)
            far = layout.far.get(layer.dilation)
            weights = layer.conv.weight, layer.norm.weight, layer.norm.bias
            return HandWrittenLayer.apply(h, *weights, far, layer.dilation, layer.norm, fast_tanh), None

        layer.forward_packed = forward_packed
    return train


def tanh_speeds(rows: int, width: int) -> str:
    """torch.tanh against 2 sigmoid(2x) - 1 on one layer's activations, (rows, width)."""
    x = torch.randn(rows, width)
    times = {}
    for name, fn in (("torch.tanh", torch.tanh), ("2 sigmoid(2x) - 1", lambda x: torch.sigmoid(2 * x).mul_(2).sub_(1))):
        for _ in range(10):
            fn(x)
        times[name] = min(_timed(lambda fn=fn: fn(x)) for _ in range(50))
    return ", ".join(f"{name} {seconds * 1e6:.0f} µs" for name, seconds in times.items())


class FixedBatch:
    """What is left of the default step with every candidate above kept and nothing but arithmetic
    around it: one batch, drawn and laid out once, then run again and again through the hand-written
    layers with the fast tanh, the head, the loss and fused AdamW. No run can be faster than this
    without fewer or fused operators: it is the floor of the step in eager PyTorch."""

    def __init__(self, train: Trainer):
        self.train, self.model = hand_written(train, fast_tanh=True), train.model
        batch = train.train_batches.sample(train.config.batch_size, train.generator)
        dilations = sorted({layer.dilation for layer in train.model.layers})
        self.layout = ExactLayout.of(batch.inputs, batch.targets, train.model.block_size, dilations, labelled=False)
        self.positions = batch.positions

    @property
    def step(self) -> int:
        return self.train.step

    def train_step(self) -> tuple[torch.Tensor, int]:
        model, optimizer = self.train.model, self.train.optimizer
        h = model.wte(self.layout.tokens)
        for layer in model.layers:
            h, _ = layer.forward_packed(h, self.layout)
        loss = self.layout.loss(model.lm_head(h))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        self.train.step += 1
        return loss.detach(), self.positions


def candidates(splits: Splits, of_peak: float) -> str:
    """Candidates for the default model's step, each against the step as it is, in turn, from the
    same weights on the same batches: AdamW unfused (the update before the fused one was kept); the
    layer written out by hand, with torch.tanh and with the fast tanh; the step compiled (train
    --compile), after its compilation, at both presets; and the floor (FixedBatch), as a fraction of
    the peak through of_peak, the default step's own in this run."""

    def unfused() -> Trainer:
        train = trainer("default", splits)
        groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in train.optimizer.param_groups]
        train.optimizer = torch.optim.AdamW(groups, lr=train.config.lr, fused=False)
        return train

    ratio, apart = against_the_step(splits, unfused())
    fused = trainer("default", splits)
    lines = [
        f"AdamW fused (kept): {1 / ratio:.2f}x the unfused update's positions/s ({update_ops(fused)} ops an "
        f"update, against {update_ops(unfused())}); {apart}"
    ]
    for name, fast_tanh in (("the layer written out by hand", False), ("the same with the fast tanh", True)):
        ratio, apart = against_the_step(splits, hand_written(trainer("default", splits), fast_tanh))
        lines.append(f"{name}: {ratio:.2f}x; {apart}")
    for preset, warm in (("default", 100), ("best", 30)):
        start = time.perf_counter()
        compiled = trainer(preset, splits, compile=True)
        for _ in range(warm):  # every bucket's shape compiled
            compiled.train_step()
        compiling = time.perf_counter() - start
        ratio, _ = against_the_step(splits, compiled, preset, rounds=25 if preset == "default" else 9)
        step_ms = 1000 * step_rate(trainer(preset, splits), 5)[1]
        lines.append(
            f"--compile, {preset}: {ratio:.2f}x, after {compiling:.0f} s of compiling and warming "
            f"(an eager step: {step_ms:.1f} ms)"
        )
    floor = FixedBatch(trainer("default", splits))
    ratio, _ = against_the_step(splits, floor)
    lines.append(
        f"the floor, the last two and fused AdamW on one batch drawn once (FixedBatch): {ratio:.2f}x the step "
        f"as it is, so {ratio * of_peak:.2f} of the peak where the step is {of_peak:.3f}; "
        f"{ops_of(floor.train_step):,} ops a step"
    )
    lines.append(f"one layer's activations (1,000 x 128): {tanh_speeds(1000, 128)}")
    return "\n".join(lines) + "\n"


def against_the_step(
    splits: Splits, candidate: Trainer, preset: str = "default", rounds: int = 25
) -> tuple[float, str]:
    """The candidate's positions/s over the preset's step as it is, trained side by side from the same
    weights on the same batches (interleaved); and how far apart their weights are after it."""
    reference = trainer(preset, splits)
    for _ in range(max(0, candidate.step - reference.step)):  # a compiled candidate has warmed
        reference.train_step()
    for train in (reference, candidate):
        for _ in range(20):
            train.train_step()
    ratio = interleaved(reference, candidate, rounds)
    pairs = zip(reference.model.parameters(), candidate.model.parameters(), strict=True)
    apart = max((a - b).abs().max().item() for a, b in pairs)
    return ratio, f"after {reference.step} steps the weights differ by up to {apart:.1e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", nargs="+", default=["default", "best"], help="default, best")
    parser.add_argument("--steps", type=int, default=40, help="steps per timing")
    parser.add_argument("--chart", type=Path, default=None, help="write the breakdown's bar chart here")
    parser.add_argument(
        "--candidates", action="store_true", help="then each candidate for a faster step against the step as it is"
    )
    args = parser.parse_args()
    splits = Splits.read(NAMES_TXT)
    peak = gflops_of_product(PEAK_SIZE, PEAK_SIZE, PEAK_SIZE)
    rows = [measure(preset, splits, args.steps, peak) for preset in args.preset]
    print(table(rows), end="")
    if args.chart:
        chart(rows, args.chart)
    if args.candidates:
        default = next((r for r in rows if r["preset"] == "default"), None) or measure(
            "default", splits, args.steps, peak
        )
        print(candidates(splits, default["of_peak"]), end="")


if __name__ == "__main__":
    main()
