"""Training-step speedup of ConvWaveNet over the per-position tree, side by side in one run.

    python bench/speedup.py [--device cpu|cuda] [--blocks 8 64 256] [--names 256 8192] [--repeats 7]
                            [--compile] [--large-batch N ...] [--precisions fp32 bf16] [--sample-names N]

Prints one line per block size and batch of --names training names:
    block=<R> names=<N> per_position=<positions/s> conv=<positions/s> speedup=<ratio>x
        limit=<(R-1)/log2 R>x multiply_adds=<the tree's matmul work over the conv model's>x
each a median of --repeats interleaved runs after warm-up, with the same weights (n_embd 24,
n_hidden 128), forward and backward. With --compile, a second line per block and batch times both
models as `train --compile` runs them: torch.compile'd, the conv model in fixed-shape buckets, and on
a GPU captured as CUDA graphs. Each model compiles once per block, for every batch size.

Then the default model's whole training step (forward, backward and AdamW) at large batches
(--large-batch names each; by default on CUDA only), per precision, eager and (--compile) compiled,
with the bytes a position moves in the eager step and the bandwidth that reaches. Then, with
--sample-names, cached generation against recomputing every window at block 256, in names/s.
An empty --blocks or --large-batch skips that part.
"""

import argparse
import math
import sys
from pathlib import Path

import torch

from wavenet_names.precision import resolve_precision
from wavenet_names.training import compiled

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workloads  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--blocks", type=int, nargs="*", default=[8, 16, 32, 64, 128, 256])
    parser.add_argument("--names", type=int, nargs="+", default=[256], help="training names per step (default 256)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--compile", action="store_true", help="also time both models as train --compile runs them")
    parser.add_argument(
        "--large-batch",
        type=int,
        nargs="*",
        help="names per batch for the whole training step's throughput (default 8192 65536 262144 "
        "on CUDA, none on a CPU)",
    )
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=workloads.PRECISIONS,
        help="for the large-batch throughput (default all that the device has)",
    )
    parser.add_argument(
        "--sample-names",
        type=int,
        default=0,
        help="names to generate, cached and by recomputing every window, at block 256 (default 0: skip)",
    )
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
    if min([args.repeats, *args.names, *args.large_batch, args.sample_names + 1]) < 1:
        print(
            "error: --repeats, --names and --large-batch must be at least 1, --sample-names at least 0", file=sys.stderr
        )
        return 2
    device = torch.device(args.device)
    data = workloads.splits()
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"# {name}, torch {torch.__version__}, n_embd {workloads.N_EMBD}, n_hidden {workloads.N_HIDDEN}")
    for block in args.blocks:
        block_speedups(data, device, int(math.log2(block)), args.names, args.repeats, args.compile)
    for batch_names in args.large_batch:
        large_batch_throughput(data, device, batch_names, args.repeats, args.precisions, args.compile)
    if args.sample_names:
        sampling_speedup(data, device, args.sample_names, args.repeats)
    return 0


def block_speedups(data, device, n_layers: int, batch_sizes: list[int], repeats: int, compile: bool) -> None:
    """The two models with the same weights, on each batch size: eager, and with `compile` compiled."""
    models = workloads.models(n_layers, data.vocab, device)
    variants = {"eager": models}
    if compile:
        variants["compiled"] = {kind: compiled(model, device) for kind, model in models.items()}
    for batch_names in batch_sizes:
        names = workloads.repeat(data.train, batch_names)
        for variant, pair in variants.items():
            steps = {}
            for kind, model in pair.items():
                step, positions = workloads.training_step(
                    model, kind, names, data.vocab, device, fixed=variant == "compiled"
                )
                steps[kind] = workloads.synchronised(step, device)
            rate = {kind: positions / s for kind, s in workloads.interleaved_medians(steps, repeats=repeats).items()}
            print(
                f"block={2**n_layers} names={batch_names}{' compiled' if variant == 'compiled' else ''} "
                f"per_position={rate['per_position']:,.0f} conv={rate['conv']:,.0f} "
                f"speedup={rate['conv'] / rate['per_position']:.2f}x limit={workloads.node_limit(n_layers):.2f}x "
                f"multiply_adds={workloads.multiply_add_ratio(names, n_layers):.2f}x",
                flush=True,
            )


def large_batch_throughput(data, device, batch_names: int, repeats: int, precisions, compile: bool) -> None:
    """The default model (the lecture's 76K tree as ConvWaveNet), its whole training step (forward,
    backward, AdamW) on one large batch of training names (repeated as needed), in each precision:
    fp32, TF32 matmuls, bf16 autocast; with `compile`, compiled as train --compile runs it too, the
    two timed in turn. The eager step's memory traffic is counted operator by operator (Traffic)."""
    names = workloads.repeat(data.train, batch_names)
    model = workloads.models(3, data.vocab, device)["conv"]
    variants = {"eager": model, "compiled": compiled(model, device)} if compile else {"eager": model}
    for precision in precisions:
        steps, peak = {}, {}
        for variant, module in variants.items():
            step, positions = workloads.training_step(
                module, "conv", names, data.vocab, device, precision, fixed=variant == "compiled", optimizer=True
            )
            steps[variant] = workloads.synchronised(step, device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            steps[variant]()  # alone, for its peak memory (and compiled, its compilation)
            peak[variant] = ""
            if device.type == "cuda":
                peak[variant] = f", peak memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB"
        moved = workloads.traffic(steps["eager"])
        seconds = workloads.interleaved_medians(steps, repeats=repeats)
        for variant in variants:
            print(
                f"default model, whole step, {batch_names} names/batch ({positions:,} positions), {precision}"
                f"{', compiled' if variant == 'compiled' else ''}: {positions / seconds[variant]:,.0f} positions/s, "
                f"{seconds[variant] * 1e3:.2f} ms/step{peak[variant]}",
                flush=True,
            )
        per_position = (moved.written + moved.read) / positions
        print(
            f"  eager: {moved.ops} operators a step, {moved.written / positions:,.0f} bytes written and "
            f"{moved.read / positions:,.0f} read per position: "
            f"{per_position * positions / seconds['eager'] / 1e9:,.0f} GB/s",
            flush=True,
        )
        if compile:
            print(f"  compiled / eager: {seconds['eager'] / seconds['compiled']:.2f}x", flush=True)


def sampling_speedup(data, device, n: int, repeats: int) -> None:
    """Names/s of generate() at block 256, with the cache and recomputing every window."""
    model = workloads.models(8, data.vocab, device)["conv"]
    runs = {
        label: workloads.synchronised(workloads.sampling(model, data.vocab, use_cache, n)[0], device)
        for label, use_cache in [("recompute", False), ("cached", True)]
    }
    seconds = workloads.interleaved_medians(runs, repeats=repeats, warmup=1)
    print(
        f"sampling, block 256, {n} names: cached {n / seconds['cached']:,.0f} names/s, recomputing "
        f"{n / seconds['recompute']:,.0f} names/s, speedup {seconds['recompute'] / seconds['cached']:.2f}x",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
