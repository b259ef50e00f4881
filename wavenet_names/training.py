"""Training: one loop for every model, evaluation over whole splits, checkpoints that resume exactly.

ConvWaveNet trains on whole names (a batch of names, every position in one pass); the per-position
models train as the lecture does, on random batches of windows. The loop never prints: it reports
through callbacks, and the CLI draws the progress bar.
"""

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from . import distributed
from .checkpoint import load_checkpoint, save_checkpoint
from .data import DataError, NameBatches, Vocab, WindowBatches, split_words
from .layers import sync_batchnorm
from .models import ModelConfig, build_model, count_params
from .plots import plot_losses
from .precision import PRECISIONS, autocast, matmuls, resolve_precision

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "data" / "names.txt"
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")


@dataclass
class TrainConfig:
    data: str = str(DEFAULT_DATA)
    steps: int = 4000
    batch_size: int = 128  # names per batch for conv; windows per batch for hierarchical and flat
    optimizer: str = "adamw"
    lr: float = 3e-3
    schedule: str = "cosine"  # cosine: warmup then decay to lr/10; step: lr/10 for the last quarter
    warmup: int = 100
    weight_decay: float = 0.1
    seed: int = 42
    device: str = "auto"
    eval_every: int = 500
    report_test: bool = False  # evaluate the test split once, at the end
    precision: str = "auto"  # a training step's arithmetic: auto, fp32, tf32 or bf16 (see precision.py)
    compile: bool = False  # torch.compile the training forward and backward (evaluation stays eager)

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"--lr must be a positive number, got {self.lr}")
        if self.warmup < 0 or not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ValueError("--warmup and --weight-decay must be numbers, and not negative")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")


# The lecture's recipe for the per-position models: batches of 32 windows, SGD at 0.1, then 0.01 for
# the last quarter of 200,000 steps.
LECTURE_RECIPE = dict(steps=200_000, batch_size=32, optimizer="sgd", lr=0.1, schedule="step", warmup=0,
                      weight_decay=0.0, eval_every=10_000)  # fmt: skip


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: CUDA is not available on this machine (use --device cpu)")
    return torch.device(device)


def learning_rate(config: TrainConfig, step: int) -> float:
    """The learning rate for the update that takes the model from `step` to `step + 1`."""
    if config.schedule == "step":
        return config.lr if step < 0.75 * config.steps else config.lr / 10
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    if config.schedule == "constant":
        return config.lr
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr / 10 + (config.lr - config.lr / 10) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def fingerprint(words: list[str]) -> str:
    return hashlib.sha256("\n".join(words).encode("utf-8")).hexdigest()[:16]


@dataclass
class Splits:
    """The words of a data file, split the lecture's way, and the vocabulary built from all of them."""

    train: list[str]
    val: list[str]
    test: list[str]
    vocab: Vocab
    fingerprint: str

    @classmethod
    def from_words(cls, words: list[str], vocab: Vocab | None = None) -> "Splits":
        if vocab is None:
            vocab = Vocab.from_words(words)
        else:
            vocab.check(words)  # every character must be known
        return cls(*split_words(words), vocab=vocab, fingerprint=fingerprint(words))

    def words(self, split: str) -> list[str]:
        """The items of one split, "train", "val" or "test", or of "all" three; an empty one is an error
        (a file of fewer than 6 items leaves the lecture's 80/10/10 split one short)."""
        words = self.train + self.val + self.test if split == "all" else getattr(self, split)
        if not words:
            n = len(self.train) + len(self.val) + len(self.test)
            items = "1 item" if n == 1 else f"{n} items"
            raise DataError(f"the {split} split is empty: the 80/10/10 split of {items} leaves it none "
                            "(6 items or more fill all three)")  # fmt: skip
        return words

    def batches(self, split: str, kind: str, block_size: int, device) -> NameBatches | WindowBatches:
        """One split ("train", "val", "test" or "all") as what a `kind` of model trains and is evaluated on."""
        return make_batches(kind, self.words(split), self.vocab, block_size, device)


def make_batches(kind: str, words: list[str], vocab: Vocab, block_size: int, device):
    cls = NameBatches if kind == "conv" else WindowBatches
    return cls(words, vocab, block_size, device)


@torch.no_grad()
def evaluate(model, batches, chunk_size: int = 2048) -> float:
    """Mean loss over every example of a split (every character of every name, end tokens included).
    The sum stays on the device, in float64, so the host waits for it once, not at every chunk."""
    was_training = model.training
    model.eval()
    try:  # however it ends (Ctrl-C in a notebook), the model goes back to the mode it was in
        total = 0.0
        for inputs, targets in batches.chunks(chunk_size):
            _, loss = model(inputs, targets)  # the mean over the chunk's examples
            total = total + loss.double() * (targets != -1).sum()
    finally:
        model.train(was_training)
    return float(total) / batches.n_examples


@dataclass
class Trainer:
    """A training run's whole state: what a checkpoint stores and --resume restores."""

    model_config: ModelConfig
    config: TrainConfig
    splits: Splits
    device: torch.device = field(default=torch.device("cpu"))
    step: int = 0
    best_val_loss: float = math.inf
    seconds: float = 0.0  # training time so far, over all resumed sessions
    train_losses: list[float] = field(default_factory=list)  # one per step, for the loss plot
    history: list[dict] = field(default_factory=list)  # one record per evaluation
    context: distributed.Context = field(default_factory=distributed.Context)

    def __post_init__(self):
        self.precision = resolve_precision(self.config.precision, self.device)  # before any work: it may refuse
        torch.manual_seed(self.config.seed)
        self.model = build_model(self.model_config).to(self.device)  # the raw module: what checkpoints hold
        self.forward = self._trainable(self.model)  # what trains: see distribute() and _trainable()
        block = self.model_config.context
        kind = self.model_config.kind
        self.train_batches = self.splits.batches("train", kind, block, self.device)
        self.val_batches = self.splits.batches("val", kind, block, self.device)
        self.optimizer = self._make_optimizer()
        self.generator = torch.Generator().manual_seed(self.config.seed)  # draws the batches

    @property
    def epochs(self) -> float:
        """Passes over the training split so far: names (conv) or windows drawn, over how many there are."""
        return self.step * self.config.batch_size / len(self.train_batches)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        if self.config.optimizer == "sgd":
            return torch.optim.SGD(self.model.parameters(), lr=self.config.lr)
        # no weight decay on embeddings, BatchNorm gains and biases: only matrices shrink
        decay = [p for p in self.model.parameters() if p.ndim >= 2 and p is not self.model.wte.weight]
        rest = [p for p in self.model.parameters() if not any(p is q for q in decay)]
        groups = [{"params": decay, "weight_decay": self.config.weight_decay}, {"params": rest, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=self.config.lr)

    def _trainable(self, module: torch.nn.Module):
        """What train_step calls: `module`, or with --compile, torch.compile's version of it. Shapes
        are dynamic from the start (every batch of names has its own length and number of
        characters), so that it compiles once, not once per new shape."""
        return torch.compile(module, dynamic=True) if self.config.compile else module

    def distribute(self, context: distributed.Context) -> "Trainer":
        """Train as one of context.world_size ranks, each on its share of every batch."""
        if self.config.batch_size < context.world_size:
            raise ValueError(f"--batch-size {self.config.batch_size} is smaller than the {context.world_size} ranks")
        self.context = context
        sync_batchnorm(self.model)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        self.forward = self._trainable(DistributedDataParallel(self.model, device_ids=device_ids))
        return self

    def train_step(self) -> tuple[torch.Tensor, int]:
        """One update; returns the batch loss (a tensor, so that the GPU need not wait) and how many
        positions this rank trained."""
        rank, world_size = self.context.rank, self.context.world_size
        inputs, targets, positions, weight = self.train_batches.sample(
            self.config.batch_size, self.generator, rank, world_size
        )
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.config, self.step)
        self.model.train()
        try:
            with matmuls(self.precision):  # TF32 or not, forward and backward alike
                with autocast(self.precision, self.device):
                    _, loss = self.forward(inputs, targets)  # the mean over this rank's positions, in float32
                self.optimizer.zero_grad(set_to_none=True)
                (loss * weight).backward()  # averaged over ranks: the mean over the whole batch's positions
        except RuntimeError as e:  # e.g. no C++ compiler for a CPU: say which option to drop
            if self.config.compile and isinstance(e, torch._dynamo.exc.TorchDynamoException):
                cause = getattr(e, "inner_exception", None) or e  # what the compiler raised, not dynamo's wrapping
                if out_of_memory(cause):  # the machine's limit, not the compiler's fault
                    raise cause from None
                first = (str(cause).strip().splitlines() or [""])[0]
                raise ValueError(f"--compile: torch.compile failed ({type(cause).__name__}: {first}); "
                                 "train without --compile") from e  # fmt: skip
            raise
        self.optimizer.step()
        self.step += 1
        batch_loss = distributed.mean_over_ranks(loss.detach() * weight)
        return batch_loss, positions

    def checkpoint(self) -> dict:
        return {
            "model_config": asdict(self.model_config),
            "train_config": asdict(self.config),
            "vocab": "".join(self.splits.vocab.chars),
            "data_fingerprint": self.splits.fingerprint,
            "train_words": "\n".join(self.splits.train),  # so `sample` can mark names it has seen
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "best_val_loss": self.best_val_loss,
            "seconds": self.seconds,
            "rng": {
                "batches": self.generator.get_state(),
                "torch": torch.get_rng_state(),  # dropout on the CPU
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],  # and on GPUs
            },
            "train_losses": torch.tensor(self.train_losses, dtype=torch.float32),
            "history": self.history,
        }

    @classmethod
    def from_checkpoint(cls, checkpoint: dict, splits: Splits, device: torch.device, **overrides) -> "Trainer":
        """Continue a run. `overrides` may change TrainConfig fields such as steps (a longer run)."""
        if splits.fingerprint != checkpoint["data_fingerprint"]:
            raise ValueError("the data differs from the data this checkpoint was trained on; --resume needs the same")
        config = TrainConfig(**{**checkpoint["train_config"], **overrides})
        if config.steps < checkpoint["step"]:
            raise ValueError(f"--steps {config.steps} is behind the saved run, at step {checkpoint['step']}: "
                             "--resume trains on up to --steps")  # fmt: skip
        trainer = cls(ModelConfig(**checkpoint["model_config"]), config, splits, device, checkpoint["step"],
                      checkpoint["best_val_loss"], checkpoint["seconds"], checkpoint["train_losses"].tolist(),
                      list(checkpoint["history"]))  # fmt: skip
        trainer.model.load_state_dict(checkpoint["model"])
        trainer.optimizer.load_state_dict(checkpoint["optimizer"])
        trainer.generator.set_state(checkpoint["rng"]["batches"])
        torch.set_rng_state(checkpoint["rng"]["torch"])
        cuda_states = checkpoint["rng"].get("cuda", [])
        if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        return trainer


def out_of_memory(e: BaseException) -> bool:
    """Whether e is a failed allocation: a GPU's OutOfMemoryError, or a CPU allocator's RuntimeError."""
    return isinstance(e, torch.cuda.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and "can't allocate memory" in str(e)
    )


class TrainingDiverged(ValueError):
    """The validation loss is not a number: the weights are nan or inf, and training cannot recover."""

    def __init__(self, step: int, val_loss: float, best_step: int | None):
        kept = (
            f"model.pt keeps the best model, from step {best_step}" if best_step is not None else "no model was saved"
        )
        super().__init__(f"training diverged: the validation loss is {val_loss} at step {step}; "
                         f"try a smaller --lr ({kept})")  # fmt: skip
        self.step = step


class TrainingInterrupted(Exception):
    def __init__(self, step: int, path: Path):
        super().__init__(f"interrupted at step {step}; saved {path}")
        self.step, self.path = step, path


def fit(
    trainer: Trainer,
    out: Path,
    on_step: Callable[[int, torch.Tensor, float], None] | None = None,
    on_eval: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict:
    """Train to config.steps, evaluating every eval_every steps. Writes into `out`:
    last.pt (the latest state, for --resume), model.pt (the best by validation loss) and
    metrics.jsonl (one record per evaluation). When should_stop() turns true (the CLI's Ctrl-C), saves
    last.pt at a step boundary and raises TrainingInterrupted; when the validation loss is nan or inf,
    raises TrainingDiverged, with last.pt and model.pt as the last finite evaluation left them.
    Returns the last evaluation record."""
    out.mkdir(parents=True, exist_ok=True)
    config, record = trainer.config, None
    recent, positions, t0 = [], 0, time.perf_counter()
    main = trainer.context.is_main  # only rank 0 evaluates and writes
    while trainer.step < config.steps:
        if distributed.any_rank(should_stop(), trainer.device):
            trainer.seconds += time.perf_counter() - t0
            trainer.train_losses += torch.stack(recent).float().tolist() if recent else []
            if main:
                save_checkpoint(trainer.checkpoint(), out / "last.pt")
            raise TrainingInterrupted(trainer.step, out / "last.pt")
        loss, n = trainer.train_step()
        recent.append(loss)
        positions += n
        if on_step is not None:
            on_step(trainer.step, loss, positions / (time.perf_counter() - t0 + 1e-9))
        if trainer.step % config.eval_every == 0 or trainer.step == config.steps:
            trainer.seconds += time.perf_counter() - t0
            if main:
                losses = torch.stack(recent).float().tolist()
                record = _evaluation(trainer, out, losses, positions, time.perf_counter() - t0)
                if on_eval is not None:
                    on_eval(record)
            recent, positions, t0 = [], 0, time.perf_counter()  # on every rank, or the others' lists grow
    return record


def _evaluation(trainer: Trainer, out: Path, losses: list[float], positions: int, seconds: float) -> dict:
    trainer.train_losses += losses
    val_loss = evaluate(trainer.model, trainer.val_batches)
    if not math.isfinite(val_loss):  # before anything is written: last.pt keeps the last state worth resuming
        best = min(trainer.history, key=lambda r: r["val_loss"], default=None)
        raise TrainingDiverged(trainer.step, val_loss, best["step"] if best else None)
    improved = val_loss < trainer.best_val_loss
    trainer.best_val_loss = min(val_loss, trainer.best_val_loss)
    record = {
        "step": trainer.step,
        "train_loss": sum(losses) / len(losses),  # mean training-batch loss since the last evaluation
        "val_loss": val_loss,
        "best_val_loss": trainer.best_val_loss,
        "lr": learning_rate(trainer.config, trainer.step - 1),
        "positions_per_second": positions / max(seconds, 1e-9),
        "seconds": trainer.seconds,
    }
    # The run's first record replaces what an earlier run in `out` left (train --overwrite): only now,
    # so that a run failing before it has anything to show leaves the earlier one whole.
    first = not trainer.history
    trainer.history.append(record)
    checkpoint = trainer.checkpoint()
    if improved:
        save_checkpoint(checkpoint, out / "model.pt")
    save_checkpoint(checkpoint, out / "last.pt")
    if first:
        for stale in ("metrics.json", "loss.png"):
            (out / stale).unlink(missing_ok=True)
    with open(out / "metrics.jsonl", "w" if first else "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    return record


def finish(trainer: Trainer, out: Path) -> tuple[dict, torch.nn.Module]:
    """The final figures of a run, from its best checkpoint (model.pt): the loss over the whole
    training split and the best validation loss. Writes metrics.json and loss.png; returns the
    figures and the best model."""
    best = load_checkpoint(out / "model.pt", map_location=trainer.device)
    model = build_model(trainer.model_config).to(trainer.device)
    model.load_state_dict(best["model"])
    metrics = {
        "train_loss": evaluate(model, trainer.train_batches),
        "val_loss": best["best_val_loss"],
        "steps": trainer.step,
        "epochs": trainer.epochs,
        "best_step": best["step"],
        "seconds": round(trainer.seconds, 2),
        "params": count_params(model),
        "model": asdict(trainer.model_config),
        "train_config": asdict(trainer.config),
    }
    if trainer.config.report_test:  # once, of the model chosen by val
        test = trainer.splits.batches("test", trainer.model_config.kind, model.block_size, trainer.device)
        metrics["test_loss"] = evaluate(model, test)
    write_json(metrics, out / "metrics.json")
    plot_losses(trainer.train_losses, trainer.history, out / "loss.png")
    return metrics, model.eval()


def write_json(data, path: Path) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_text(path: Path, text: str) -> None:
    """Atomically, like the checkpoints: a reader never sees half a file, a crash never leaves one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
