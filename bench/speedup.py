"""Training-step speedup of ConvWaveNet over the per-position tree, side by side in one run.

    python bench/speedup.py [--device cpu|cuda] [--blocks 8 64 256] [--names 256] [--repeats 7]

Prints one line per block size:
    block=<R> per_position=<positions/s> conv=<positions/s> speedup=<ratio>x limit=<(R-1)/log2 R>x
        multiply_adds=<the tree's matmul work over the conv model's, for these names>x
each a median of --repeats interleaved runs after warm-up, on the same --names training names and
the same weights (n_embd 24, n_hidden 128). Then the default model's training throughput at large
batches (--large-batch names each; by default on CUDA only): fp32, TF32 matmuls (CUDA) and bf16
autocast, and with --compile, eager and torch.compile'd side by side. An empty --blocks or
--large-batch skips that part.
"""

import argparse
import math
import sys
from pathlib import Path

import torch

from wavenet_names.precision import resolve_precision

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workloads  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--blocks", type=int, nargs="*", default=[8, 16, 32, 64, 128, 256])
    parser.add_argument("--names", type=int, default=256, help="training names per step (default 256)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--large-batch",
        type=int,
        nargs="*",
        help="names per batch for the large-batch throughput (default 8192 65536 262144 on CUDA, none on a CPU)",
    )
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=workloads.PRECISIONS,
        help="for the large-batch throughput (default all that the device has)",
    )
    parser.add_argument("--compile", action="store_true", help="large-batch throughput: also torch.compile'd")
    args = parser.parse_args()
    if args.large_batch is None:
        args.large_batch = [8192, 65536, 262144] if args.device == "cuda" else []
    if args.precisions is None:
        args.precisions = [p for p in workloads.PRECISIONS if args.device == "cuda" or p != "tf32"]
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: CUDA is not available", file=sys.stderr)
        return 2
    try:
        for precision in args.precisions:  # train's own check: tf32 needs CUDA, bf16 a GPU with it
            resolve_precision(precision, torch.device(args.device))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    bad = [b for b in args.blocks if b < 2 or b & (b - 1)]
    if bad:
        print(f"error: --blocks must be powers of two >= 2, got {bad}", file=sys.stderr)
        return 2
    if min([args.repeats, args.names, *args.large_batch]) < 1:
        print("error: --repeats, --names and --large-batch must be at least 1", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    data = workloads.splits()
    names = workloads.repeat(data.train, args.names)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    sizes = f"n_embd {workloads.N_EMBD}, n_hidden {workloads.N_HIDDEN}"
    print(f"# {name}, torch {torch.__version__}, {args.names} names, {sizes}")
    for block in args.blocks:
        n_layers = int(math.log2(block))
        steps = {}
        for kind, model in workloads.models(n_layers, data.vocab, device).items():
            step, positions = workloads.training_step(model, kind, names, data.vocab, device)
            steps[kind] = workloads.synchronised(step, device)
        seconds = workloads.interleaved_medians(steps, repeats=args.repeats)
        rate = {kind: positions / s for kind, s in seconds.items()}
        print(f"block={block} per_position={rate['per_position']:,.0f} conv={rate['conv']:,.0f} "
              f"speedup={rate['conv'] / rate['per_position']:.2f}x limit={workloads.node_limit(n_layers):.2f}x "
              f"multiply_adds={workloads.multiply_add_ratio(names, n_layers):.2f}x",
              flush=True)  # fmt: skip
    for batch_names in args.large_batch:
        large_batch_throughput(data, device, batch_names, args.repeats, args.precisions, args.compile)
    return 0


def large_batch_throughput(data, device, batch_names: int, repeats: int, precisions, compile: bool) -> None:
    """The default model (the lecture's 76K tree as ConvWaveNet) on one large batch of training names
    (repeated as needed), in each precision: fp32, TF32 matmuls, bf16 autocast; with `compile`, the
    same model torch.compile'd too, the two timed in turn."""
    names = workloads.repeat(data.train, batch_names)
    model = workloads.models(3, data.vocab, device)["conv"]
    variants = {"eager": model, "compiled": torch.compile(model, dynamic=True)} if compile else {"eager": model}
    for precision in precisions:
        steps, peak = {}, {}
        for variant, module in variants.items():
            step, positions = workloads.training_step(module, "conv", names, data.vocab, device, precision)
            steps[variant] = workloads.synchronised(step, device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            steps[variant]()  # alone, for its peak memory (and compiled, its compilation)
            peak[variant] = ""
            if device.type == "cuda":
                peak[variant] = f", peak memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB"
        seconds = workloads.interleaved_medians(steps, repeats=repeats)
        for variant in variants:
            print(f"default model, {batch_names} names/batch ({positions:,} positions), {precision}"
                  f"{', compiled' if variant == 'compiled' else ''}: {positions / seconds[variant]:,.0f} positions/s, "
                  f"{seconds[variant] * 1e3:.2f} ms/step{peak[variant]}", flush=True)  # fmt: skip
        if compile:
            print(f"  compiled / eager: {seconds['eager'] / seconds['compiled']:.2f}x", flush=True)


if __name__ == "__main__":
    sys.exit(main())
