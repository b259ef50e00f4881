"""Training-step speedup of ConvWaveNet over the per-position tree, side by side in one run.

    python bench/speedup.py [--device cpu|cuda] [--blocks 8 64 256] [--repeats 7]

Prints one line per block size:
    block=<R> per_position=<positions/s> conv=<positions/s> speedup=<ratio>x limit=<(R-1)/log2 R>x
each a median of --repeats interleaved runs after warm-up, on the same 256 names and the same
weights (n_embd 24, n_hidden 128). On CUDA it also measures the default model's training throughput
at a large batch (--large-batch names).
"""

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workloads  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--blocks", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--large-batch", type=int, default=8192, help="names per batch for the CUDA throughput")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: CUDA is not available", file=sys.stderr)
        return 2
    bad = [b for b in args.blocks if b < 2 or b & (b - 1)]
    if bad or args.repeats < 1:
        print(f"error: blocks must be powers of two >= 2 (got {bad}) and --repeats >= 1", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    data = workloads.splits()
    names = data.train[:256]
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"# {name}, torch {torch.__version__}, 256 names, n_embd {workloads.N_EMBD}, n_hidden {workloads.N_HIDDEN}")
    for block in args.blocks:
        n_layers = int(math.log2(block))
        steps = {}
        for kind, model in workloads.models(n_layers, data.vocab, device).items():
            step, positions = workloads.training_step(model, kind, names, data.vocab, device)
            steps[kind] = workloads.synchronised(step, device)
        seconds = workloads.interleaved_medians(steps, repeats=args.repeats)
        rate = {kind: positions / s for kind, s in seconds.items()}
        print(f"block={block} per_position={rate['per_position']:,.0f} conv={rate['conv']:,.0f} "
              f"speedup={rate['conv'] / rate['per_position']:.2f}x limit={workloads.node_limit(n_layers):.2f}x",
              flush=True)  # fmt: skip
    if device.type == "cuda":
        large_batch_throughput(data, device, args.large_batch, args.repeats)
    return 0


def large_batch_throughput(data, device, batch_names: int, repeats: int) -> None:
    """The default model (the lecture's 76K tree as ConvWaveNet) on a large batch: fp32 and bf16."""
    names = (data.train * (batch_names // len(data.train) + 1))[:batch_names]
    model = workloads.models(3, data.vocab, device)["conv"]
    for autocast in (False, True):
        step, positions = workloads.training_step(model, "conv", names, data.vocab, device, autocast=autocast)
        seconds = workloads.interleaved_medians({"conv": workloads.synchronised(step, device)}, repeats=repeats)
        print(f"default model, {batch_names} names/batch, {'bf16' if autocast else 'fp32'}: "
              f"{positions / seconds['conv']:,.0f} positions/s")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
