"""Where one training step of ConvWaveNet spends its time: torch.profiler's table of operators.

    python bench/profile_step.py [--device cpu|cuda] [--names 256] [--n-layers 3] [--precision fp32] [--compile]
    python bench/profile_step.py --count [--names 256] [--n-layers 3]

Profiles forward + backward of the loss over every position of --names training names (repeated as
needed), with the benchmarks' sizes (n_embd 24, n_hidden 128), after warm-up, and prints the
operators sorted by their own time on the device (CPU time on a CPU). --compile profiles the step as
`train --compile` runs it: in fixed-shape buckets, compiled, and on a GPU captured as CUDA graphs.
Read it before optimising: find where the time goes with a profile; do not guess.

--count prints, instead, what a GPU step would cost, counted on any device: the ATen operators of
one eager step (each at least one kernel launch on a GPU) and the bytes they write and read per
position, for the per-position tree and for the conv model, laid out exactly and in a bucket. With
--compile, also how the conv model's step compiles in either layout: the graphs torch.compile
captures (a break between two is a return to Python, and on a GPU the end of a CUDA graph) and
the kernels inductor generates for them (besides the matrix products it calls).
"""

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from wavenet_names.precision import resolve_precision
from wavenet_names.training import compiled

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workloads  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--names", type=int, default=256, help="names per batch (default 256)")
    parser.add_argument("--n-layers", type=int, default=3, help="tree depth, block 2**n_layers (default 3)")
    parser.add_argument("--steps", type=int, default=5, help="profiled steps, after 3 warm-up steps (default 5)")
    parser.add_argument("--rows", type=int, default=30, help="operators to print (default 30)")
    parser.add_argument(
        "--precision",
        choices=workloads.PRECISIONS,
        default="fp32",
        help="as train's --precision (tf32: CUDA only; default fp32)",
    )
    parser.add_argument("--compile", action="store_true", help="profile the torch.compile'd step, as train --compile")
    parser.add_argument("--count", action="store_true", help="count operators and bytes per position instead")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: CUDA is not available", file=sys.stderr)
        return 2
    if min(args.names, args.n_layers, args.steps, args.rows) < 1:
        print("error: --names, --n-layers, --steps and --rows must be at least 1", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    try:
        resolve_precision(args.precision, device)  # train's own check: tf32 needs CUDA, bf16 a GPU with it
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    data = workloads.splits()
    names = workloads.repeat(data.train, args.names)
    if args.count:
        count(data, names, args.n_layers, device, args.precision)
        if args.compile:
            count_compiled(data, names, args.n_layers, device, args.precision)
        return 0
    model = workloads.models(args.n_layers, data.vocab, device)["conv"]
    if args.compile:
        model = compiled(model, device)  # compiled by the warm-up steps below
    step, positions = workloads.training_step(
        model, "conv", names, data.vocab, device, args.precision, fixed=args.compile
    )
    step = workloads.synchronised(step, device)
    for _ in range(3):
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            step()
    sort_by = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(
        f"# conv training step, block {2**args.n_layers}, {args.names} names ({positions:,} positions), "
        f"{args.steps} steps, {device.type}, {args.precision}{', compiled' if args.compile else ''}, "
        f"torch {torch.__version__}"
    )
    print(prof.key_averages().table(sort_by=sort_by, row_limit=args.rows))
    return 0


def count(data, names: list[str], n_layers: int, device, precision: str) -> None:
    """The Traffic of one eager training step (forward and backward), per model and layout."""
    pair = workloads.models(n_layers, data.vocab, device)
    print(
        f"# one eager training step, block {2**n_layers}, {len(names)} names, {device.type}, {precision}, "
        f"torch {torch.__version__}"
    )
    for label, kind, fixed in [
        ("per-position", "per_position", False),
        ("conv", "conv", False),
        ("conv, in a bucket", "conv", True),
    ]:
        step, positions = workloads.training_step(pair[kind], kind, names, data.vocab, device, precision, fixed)
        moved = workloads.traffic(step)
        print(
            f"{label}: {moved.ops} ATen operators, {moved.written / positions:,.0f} bytes written and "
            f"{moved.read / positions:,.0f} read per position"
        )


def count_compiled(data, names: list[str], n_layers: int, device, precision: str) -> None:
    """Graphs, graph breaks and generated kernels of the compiled conv step, per layout."""
    from torch._dynamo.utils import counters
    from torch._inductor import metrics

    print(f"# the conv model's training step compiled as train --compile compiles it, {device.type}")
    for label, fixed in [("conv", False), ("conv, in a bucket", True)]:
        torch._dynamo.reset()
        metrics.reset()
        counters.clear()
        model = compiled(workloads.models(n_layers, data.vocab, device)["conv"], device)
        step, _ = workloads.training_step(model, "conv", names, data.vocab, device, precision, fixed)
        step()  # compiles forward and backward
        print(
            f"{label}: {counters['stats']['unique_graphs']} graph(s), {sum(counters['graph_break'].values())} "
            f"breaks, {metrics.generated_kernel_count} generated kernels"
        )


if __name__ == "__main__":
    sys.exit(main())
