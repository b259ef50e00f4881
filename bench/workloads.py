"""What bench/ times, shared by the pytest benchmarks and speedup.py: the package's real code paths
(the models' forward and backward, `evaluate`, `generate`) on names from data/names.txt."""

import statistics
import time
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from wavenet_names import (
    HierarchicalMLP,
    Vocab,
    conv_from_tree,
    encode_names,
    pad_batch,
    read_words,
    windows,
)
from wavenet_names.choosing import SampleConfig
from wavenet_names.data import NAMES_TXT
from wavenet_names.models import kind_of
from wavenet_names.packing import bucket, packed_rows
from wavenet_names.precision import PRECISIONS as TRAIN_PRECISIONS
from wavenet_names.precision import autocast, matmuls
from wavenet_names.sampling import generate
from wavenet_names.scoring import evaluate
from wavenet_names.splits import Splits
from wavenet_names.training import fuses_adamw

N_EMBD, N_HIDDEN = 24, 128  # the lecture's final sizes
PRECISIONS = tuple(p for p in TRAIN_PRECISIONS if p != "auto")  # a benchmark names its precision


def splits() -> Splits:
    return Splits.from_words(read_words(NAMES_TXT))


def repeat(words: list[str], n: int) -> list[str]:
    """The first n of words, words, words, ...: a batch of any size from one split."""
    return (words * (n // len(words) + 1))[:n]


def models(n_layers: int, vocab: Vocab, device) -> dict[str, torch.nn.Module]:
    """The per-position tree and the conv model, with the same weights."""
    torch.manual_seed(0)
    tree = HierarchicalMLP(len(vocab), N_EMBD, N_HIDDEN, n_layers).to(device)
    return {"per_position": tree, "conv": conv_from_tree(tree)}


def training_step(
    model,
    kind: str,
    words: list[str],
    vocab: Vocab,
    device,
    precision: str = "fp32",
    fixed: bool = False,
    optimizer: bool = False,
):
    """One forward + backward of the loss over every position of `words`, in `precision` (fp32, tf32
    or bf16, as Trainer runs it). fixed: the conv model's fixed-shape step, its packed rows in a
    bucket (what a compiled or graph-captured step trains on, see NameBatches.sample). optimizer: and
    an AdamW update, as Trainer makes it (fused where torch has the kernel): the whole training step.
    Returns (fn, positions)."""
    block_size = model.block_size
    rows = {}
    if kind == "conv":
        tokens, lengths = encode_names(words, vocab)
        inputs, targets = pad_batch(tokens, lengths, block_size)
        if fixed:
            rows = {"rows": bucket(packed_rows(lengths))}
    else:
        inputs, targets = windows(words, vocab, block_size)
    inputs, targets = inputs.to(device), targets.to(device)
    model.train()
    update = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fuses_adamw(device)) if optimizer else None

    def step():
        model.zero_grad(set_to_none=True)
        with matmuls(precision):
            with autocast(precision, device):
                _, loss = model(inputs, targets, **rows)
            loss.backward()
        if update is not None:
            update.step()

    return step, int((targets != -1).sum())


class Traffic(TorchDispatchMode):
    """What a step asks of memory, operator by operator, as eager mode runs it: how many ATen operators
    (on a GPU, kernel launches at least) and the bytes they write and read (each operator's outputs
    and tensor inputs, views and in-place aliases aside). A CPU-side proxy for a GPU step's cost, which
    launches and memory traffic bound for a model this small; a compiler fuses some of it away."""

    VIEWS = {
        "view",
        "_unsafe_view",
        "reshape",
        "t",
        "transpose",
        "permute",
        "expand",
        "slice",
        "select",
        "unsqueeze",
        "squeeze",
        "detach",
        "alias",
        "as_strided",
        "split",
        "chunk",
        "unbind",
        "split_with_sizes",
        "_reshape_alias",
        "lift_fresh",
        "unfold",
    }

    def __init__(self):
        super().__init__()
        self.ops, self.written, self.read = 0, 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket.__name__ not in self.VIEWS:
            self.ops += 1
            self.written += sum(t.nbytes for t in tree_leaves(out) if isinstance(t, torch.Tensor))
            self.read += sum(t.nbytes for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor))
        return out


def traffic(step: Callable) -> Traffic:
    """Run `step` once (after a warm-up run) under the Traffic counter."""
    step()
    with Traffic() as counted:
        step()
    return counted


def eval_pass(model, kind: str, words: list[str], vocab: Vocab, device):
    """The loss over a whole split, through scoring.evaluate. Returns (fn, positions)."""
    batches = kind_of(model).batches(
        words, vocab, model.block_size, device
    )  # whole names for conv, windows for the tree
    return (lambda: evaluate(model, batches)), batches.n_examples


def sampling(model, vocab: Vocab, use_cache: bool, n: int = 8):
    """Generate n names (seed 0, the same names either way). Returns (fn, names)."""
    model.eval()
    config = SampleConfig(n=n, seed=0, cut_at=20)
    return (lambda: generate(model, vocab, config, use_cache=use_cache)), n


def synchronised(fn: Callable, device) -> Callable:
    if device.type != "cuda":
        return fn

    def run():
        fn()
        torch.cuda.synchronize()

    return run


def interleaved_medians(fns: dict[str, Callable], repeats: int = 7, warmup: int = 2) -> dict[str, float]:
    """Median seconds of each fn, run in turn (a, b, b, a, a, b, ...) so that a noisy machine slows both
    alike, and neither is always the one that runs first (after the other has filled the caches)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for round in range(repeats):
        for name, fn in list(fns.items())[:: 1 if round % 2 == 0 else -1]:
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def node_limit(n_layers: int) -> float:
    """What reuse can buy at most: 2**L - 1 tree nodes per position recomputed, against L."""
    return (2**n_layers - 1) / n_layers


def multiply_add_ratio(words: list[str], n_layers: int) -> float:
    """The tree's matmul multiply-adds over the conv model's, for every position of `words` (the
    backward pass scales both alike). The conv model computes one node per layer and position, but
    every name's first position is the shared row 0, and where a left input lies in the padding only
    half a node (the other half is row 0's, shared by the batch): it beats the node limit whenever
    names are short against the receptive field."""
    positions = sum(len(w) + 1 for w in words)  # the tree's windows
    rows = 1 + sum(len(w) for w in words)  # the conv model's: every name's first position is row 0
    tree, conv = positions * N_HIDDEN * 27, rows * N_HIDDEN * 27  # the heads (27: a-z and '.')
    for i in range(n_layers):
        n_in = N_EMBD if i == 0 else N_HIDDEN
        far = sum(max(0, len(w) - 2**i) for w in words)  # rows whose left input is in their own name
        conv += (rows + far) * n_in * N_HIDDEN  # the right half of the kernel everywhere, the left half there
        tree += positions * 2 ** (n_layers - 1 - i) * 2 * n_in * N_HIDDEN  # every node of every window
    return tree / conv
