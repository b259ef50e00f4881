"""Training: one loop for every model, evaluation over whole splits, checkpoints that resume exactly.

ConvWaveNet trains on whole names (a batch of names, every position in one pass); the per-position
models train as the lecture does, on random batches of windows. The loop never prints: it reports
through callbacks, and the CLI draws the progress bar.
"""

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from . import distributed
from .checkpoint import load_checkpoint, save_checkpoint
from .data import NAMES_TXT, DataError, NameBatches, Vocab, WindowBatches, naming, split_words
from .devices import DEVICE_HELP, float64_on, parse_device
from .files import write_json, write_text
from .labels import LabelColumns, Table, read_items
from .layers import sync_batchnorm
from .models import KINDS, ModelConfig, batches_for, build_model, count_params, kind_config
from .options import OptionError, check_at_least, check_choices, default, option, option_fields, option_name
from .plots import plot_losses
from .precision import PRECISIONS, autocast, matmuls, resolve_precision
from .sampling import Seen

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")


@dataclass
class TrainConfig:
    """How a run trains. The defaults are ConvWaveNet's; a model kind may have its own (Kind.recipe)."""

    data: str = option(
        str(NAMES_TXT),
        "text file, one item per line, or a .tsv or .csv table with a header row: the "
        "items, then label columns (default: data/names.txt, 32,469 US baby names of 2017, shipped "
        "with the package; data/names-by-decade.tsv labels names with sex and decade)",
        show_default=False,
    )
    labels: bool = option(
        True,
        "train on a table's label columns too: a conditional model, which `sample "
        "--label` steers; --no-labels: on its items alone",
        negatable=True,
    )
    steps: int = option(4000, "optimizer steps", resumable=True)
    batch_size: int = option(128, "names per step (conv), or windows (the per-position models)")
    optimizer: str = option("adamw", "AdamW decays weight matrices only; SGD decays nothing", choices=OPTIMIZERS)
    lr: float = option(3e-3, "peak learning rate")
    schedule: str = option(
        "cosine",
        "cosine: warmup, then down to lr/10; step: lr/10 for the last quarter "
        "(the lecture's); constant: warmup, then lr",
        choices=SCHEDULES,
    )
    warmup: int = option(100, "linear warmup steps (cosine and constant)")
    weight_decay: float = option(0.1, "AdamW weight decay")
    seed: int = option(42, "seed for initialisation, batches and dropout")
    device: str = option("auto", DEVICE_HELP, resumable=True)
    eval_every: int = option(500, "evaluate on the validation split every N steps", resumable=True)
    report_test: bool = option(False, "evaluate the test split once, at the end (choose models by val, never by test)")
    members: int = option(
        1,
        "train this many models alike, from seeds seed, seed+1000, seed+2000, ..., each a "
        "run of its own in OUT/member-N, and save them as one ensemble in OUT/model.pt: their "
        "next-character distributions averaged",
    )
    members_at_once: int = option(
        1,
        "with --members: train this many at once, each in a process of its own with "
        "an equal share of the CPU threads (on 2 CPU cores, 2 at once train about 1.3x "
        "the positions/s of 1)",
        resumable=True,
    )
    precision: str = option(
        "auto",
        "a training step's arithmetic: fp32; tf32 (CUDA) matmuls; bf16 autocast; "
        "auto: tf32 on a GPU, fp32 on a CPU. Evaluation is always float32",
        choices=PRECISIONS,
        resumable=True,
    )
    compile: bool = option(
        False,
        "torch.compile the training step: slower to start (it compiles for up to a "
        "minute), then faster, most at large batches on a GPU; needs a C++ compiler on a CPU",
        resumable=True,
        negatable=True,
    )
    patience: int | None = option(
        None,
        "stop early when the validation loss has not improved for this many evaluations "
        "(model.pt keeps the best; default: train every step)",
        resumable=True,
        show_default=False,
    )
    max_time: float | None = option(
        None,
        "stop after this many seconds of training, over every resumed session, with an evaluation "
        "there; the learning rate's schedule still spans --steps (default: no limit)",
        resumable=True,
        show_default=False,
    )
    checkpoint_every: int | None = option(
        None,
        "also save OUT/last.pt every N steps between evaluations, so "
        "that a crash loses at most N steps (default: at evaluations only)",
        resumable=True,
        show_default=False,
    )

    def __post_init__(self):
        check_choices(self)
        parse_device(self.device)
        check_at_least(self, 1, "steps", "batch_size", "eval_every", "checkpoint_every", "members", "members_at_once")
        check_at_least(self, 1, "patience")
        check_at_least(self, 0, "warmup")
        if self.max_time is not None and not (self.max_time > 0 and math.isfinite(self.max_time)):
            raise OptionError("max_time", f"must be a positive number of seconds, got {self.max_time}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise OptionError("lr", f"must be a positive number, got {self.lr}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise OptionError("weight_decay", f"must be a number, not negative, got {self.weight_decay}")


# every option of `train` by its name (ModelConfig.kind is "model"): what configs() and sweep files take
OPTIONS = {option_name(f): f for cls in (ModelConfig, TrainConfig) for f in option_fields(cls)}
RESUMABLE = {f.name for f in OPTIONS.values() if f.metadata["resumable"]}  # what a resumed run may change


def as_fields(options: dict) -> dict:
    """Options by name ({"model": "flat", ...}) as the config fields they set ({"kind": "flat", ...})."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not an option of train")
    return {OPTIONS[name].name: value for name, value in options.items()}


def changed_settings(saved_model: dict, saved_train: dict, given: dict, may_change=frozenset()) -> tuple[str, ...]:
    """The one test of "same settings": the config fields of `given` (by field name) whose values
    differ from those of a saved run (its model and train configs as a checkpoint or metrics.json
    holds them), but for the fields in `may_change`. The saved run is read through its configs, so
    that a field added since it was saved takes its default."""
    saved = {**asdict(ModelConfig(**saved_model)), **asdict(TrainConfig(**saved_train))}
    return tuple(name for name, value in given.items() if name not in may_change and saved[name] != value)


def configs(
    options: dict, vocab_size: int | None = None, label_sizes: tuple[int, ...] = (), positions: int | None = None
) -> tuple[ModelConfig, TrainConfig]:
    """A run's configs from options by name, as `train`'s flags, presets and sweep files name them
    ({"model": "flat", "lr": 0.01, ...}): the model kind's own defaults and recipe, then the options.
    vocab_size, label_sizes and positions: the data's (see Splits), where it is known; positions
    reaches a positional kind alone."""
    by_field = as_fields(options)
    model = {k: v for k, v in by_field.items() if k in ModelConfig.__dataclass_fields__}
    train = {k: v for k, v in by_field.items() if k in TrainConfig.__dataclass_fields__}
    kind = model.pop("kind", default(OPTIONS["model"]))
    data = {"label_sizes": label_sizes} | ({} if vocab_size is None else {"vocab_size": vocab_size})
    if kind in KINDS and KINDS[kind].positional and positions is not None:
        data["positions"] = positions
    model_config = kind_config(kind, **model, **data)
    return model_config, TrainConfig(**{**KINDS[kind].recipe, **train})


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


def fingerprint(words: list[str], labels: torch.Tensor | None = None) -> str:
    if labels is not None:  # a conditional model's data is its items and their labels
        words = [f"{w}\t{' '.join(map(str, row))}" for w, row in zip(words, labels.tolist(), strict=True)]
    return hashlib.sha256("\n".join(words).encode("utf-8")).hexdigest()[:16]


SPLITS = ("train", "val", "test")


@dataclass
class Splits:
    """The words of a data file, split the lecture's way, and the vocabulary built from all of them;
    for a conditional model, the label columns and each split's labels, (N, K) long."""

    train: list[str]
    val: list[str]
    test: list[str]
    vocab: Vocab
    fingerprint: str
    label_columns: LabelColumns | None = None
    split_labels: dict[str, torch.Tensor] = field(default_factory=dict)  # by split name

    @classmethod
    def from_words(
        cls,
        words: list[str],
        vocab: Vocab | None = None,
        labels: torch.Tensor | None = None,
        label_columns: LabelColumns | None = None,
    ) -> "Splits":
        """labels (N, K): each word's, numbered by label_columns (None: a list without labels)."""
        if vocab is None:
            vocab = Vocab.from_words(words)
        else:
            vocab.check(words)  # every character must be known
        if labels is None:
            return cls(*split_words(words), vocab=vocab, fingerprint=fingerprint(words))
        parts = split_words(list(range(len(words))))  # the same shuffle, of the rows: items and labels alike
        split_labels = {name: labels[part] for name, part in zip(SPLITS, parts, strict=True)}
        return cls(
            *([words[i] for i in part] for part in parts),
            vocab,
            fingerprint(words, labels),
            label_columns,
            split_labels,
        )

    @classmethod
    def read(
        cls,
        path: str | Path,
        vocab: Vocab | None = None,
        label_columns: LabelColumns | None = None,
        use_labels: bool = True,
    ) -> "Splits":
        """A data file's splits: a list, or a table (.tsv, .csv) with its labels when use_labels. label_columns:
        a trained model's, whose numbering the table's labels take (None: the table's own)."""
        data = read_items(path)
        if vocab is not None:  # a trained model's: every character must be one it knows
            with naming(str(path)):
                vocab.check(data.items if isinstance(data, Table) else data)
        if not isinstance(data, Table):
            return cls.from_words(data, vocab)
        if not use_labels or not data.columns:
            return cls.from_words(data.items, vocab)
        columns = label_columns or LabelColumns.of(data)
        return cls.from_words(data.items, vocab, columns.encode(data, str(path)), columns)

    @property
    def positions(self) -> int:
        """What ModelConfig.positions a positional model of these splits has: the longest item, of any
        split, and its end token (makemore's block_size)."""
        return max(len(w) for w in self.train + self.val + self.test) + 1

    @property
    def seen(self) -> Seen:
        """The items of each split, which a sample is marked against."""
        return Seen(frozenset(self.train), frozenset(self.val + self.test))

    @property
    def label_sizes(self) -> tuple[int, ...]:
        """What ModelConfig.label_sizes a model of these splits has: () without labels."""
        return self.label_columns.sizes if self.label_columns is not None else ()

    def labels(self, split: str) -> torch.Tensor | None:
        """The labels (N, K) of one split, or of "all" three, in words()' order; None without labels."""
        if not self.split_labels:
            return None
        return torch.cat([self.split_labels[s] for s in SPLITS]) if split == "all" else self.split_labels[split]

    def words(self, split: str) -> list[str]:
        """The items of one split, "train", "val" or "test", or of "all" three; an empty one is an error
        (a file of fewer than 6 items leaves the lecture's 80/10/10 split one short)."""
        words = self.train + self.val + self.test if split == "all" else getattr(self, split)
        if not words:
            n = len(self.train) + len(self.val) + len(self.test)
            items = "1 item" if n == 1 else f"{n} items"
            raise DataError(
                f"the {split} split is empty: the 80/10/10 split of {items} leaves it none "
                "(6 items or more fill all three)"
            )
        return words

    def batches(self, split: str, model: torch.nn.Module, device) -> NameBatches | WindowBatches:
        """One split ("train", "val", "test" or "all") as what `model` trains and is evaluated on."""
        return batches_for(model, self.words(split), self.vocab, device, self.labels(split))


@torch.no_grad()
def evaluate(model, batches, chunk_size: int = 2048) -> float:
    """Mean loss over every example of a split (every character of every name, end tokens included).
    The sum stays on the device, in float64, so the host waits for it once, not at every chunk (on a
    device without float64, such as mps, it is taken on the CPU, chunk by chunk)."""
    was_training = model.training
    model.eval()
    try:  # however it ends (Ctrl-C in a notebook), the model goes back to the mode it was in
        total = 0.0
        for inputs, targets, labels in batches.chunks(chunk_size):
            _, loss = model(inputs, targets, labels=labels)  # the mean over the chunk's examples
            loss = loss if float64_on(loss.device) else loss.cpu()
            total = total + loss.double() * (targets != -1).sum().to(loss.device)
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
    stopped: str | None = None  # why fit stopped before config.steps (config.patience, config.max_time)

    def __post_init__(self):
        if self.config.members != 1:  # each member is a run of its own: runs.run trains them
            raise OptionError(
                "members",
                f"is {self.config.members}: a Trainer trains one model; runs.run trains an ensemble's members",
            )
        if not self.config.labels and self.splits.label_columns is not None:  # (a sweep reads its data once)
            raise OptionError(
                "labels",
                "is off, but the data was read with its labels: read it with Splits.read(path, use_labels=False)",
            )
        if self.model_config.label_sizes != self.splits.label_sizes:
            raise ValueError(
                f"the model's label sizes {self.model_config.label_sizes} are not the data's {self.splits.label_sizes}"
            )
        self.precision = resolve_precision(self.config.precision, self.device)  # before any work: it may refuse
        torch.manual_seed(self.config.seed)
        self.model = build_model(self.model_config).to(self.device)  # the raw module: what checkpoints hold
        self.forward = self._trainable(self.model)  # what trains: see distribute() and _trainable()
        self.train_batches = self.splits.batches("train", self.model, self.device)
        self.val_batches = self.splits.batches("val", self.model, self.device)
        self.optimizer = self._make_optimizer()
        self.generator = torch.Generator().manual_seed(self.config.seed)  # draws the batches

    @property
    def epochs(self) -> float:
        """Passes over the training split so far: names (conv) or windows drawn, over how many there are."""
        return self.step * self.config.batch_size / len(self.train_batches)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        if self.config.optimizer == "sgd":
            return torch.optim.SGD(self.model.parameters(), lr=self.config.lr)
        decay, rest = parameter_groups(self.model)
        groups = [{"params": decay, "weight_decay": self.config.weight_decay}, {"params": rest, "weight_decay": 0.0}]
        # fused: one kernel per step for every parameter on a GPU, not a few per parameter
        return torch.optim.AdamW(groups, lr=self.config.lr, fused=self.device.type == "cuda")

    def _trainable(self, module: torch.nn.Module):
        """What train_step calls: `module`, or with --compile, compiled (see `compiled`)."""
        return compiled(module, self.device) if self.config.compile else module

    def distribute(self, context: distributed.Context) -> "Trainer":
        """Train as one of context.world_size ranks, each on its share of every batch."""
        if self.config.batch_size < context.world_size:
            raise OptionError("batch_size", f"{self.config.batch_size} is smaller than the {context.world_size} ranks")
        self.context = context
        sync_batchnorm(self.model)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        self.forward = self._trainable(DistributedDataParallel(self.model, device_ids=device_ids))
        return self

    def undistribute(self) -> None:
        """Let go of DistributedDataParallel, whose reducer holds the process group: released before
        the group is destroyed (distributed.cleanup), not at the interpreter's exit, where destroying
        gloo's threads in a half-torn-down interpreter aborted a finished run (SIGABRT) now and then."""
        self.forward = self._trainable(self.model)

    def train_step(self) -> tuple[torch.Tensor, int]:
        """One update; returns the batch loss (a tensor, so that the GPU need not wait) and how many
        positions this rank trained."""
        rank, world_size = self.context.rank, self.context.world_size
        # compiled, every batch comes in one of a few shapes (see NameBatches.sample), each captured once
        fixed_shapes = self.config.compile and KINDS[self.model_config.kind].fixed_shapes
        batch = self.train_batches.sample(self.config.batch_size, self.generator, rank, world_size, fixed_shapes)
        fixed = {} if batch.rows is None else {"rows": batch.rows}
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.config, self.step)
        self.model.train()
        try:
            with matmuls(self.precision):  # TF32 or not, forward and backward alike
                with autocast(self.precision, self.device):
                    # this rank's mean, in float32
                    _, loss = self.forward(batch.inputs, batch.targets, labels=batch.labels, **fixed)
                self.optimizer.zero_grad(set_to_none=True)
                (loss * batch.weight).backward()  # averaged over ranks: the mean over the whole batch's positions
        except RuntimeError as e:  # e.g. no C++ compiler for a CPU: say which option to drop
            if self.config.compile and isinstance(e, torch._dynamo.exc.TorchDynamoException):
                cause = getattr(e, "inner_exception", None) or e  # what the compiler raised, not dynamo's wrapping
                if out_of_memory(cause):  # the machine's limit, not the compiler's fault
                    raise cause from None
                first = (str(cause).strip().splitlines() or [""])[0]
                raise OptionError(
                    "compile", f"failed: torch.compile raised {type(cause).__name__}: {first}; train without it"
                ) from e
            raise
        self.optimizer.step()
        self.step += 1
        batch_loss = distributed.mean_over_ranks(loss.detach() * batch.weight)
        return batch_loss, batch.positions

    def ranks_rng(self) -> list[dict]:
        """Every rank's own random state (dropout's, on the CPU and its GPU), in rank order. Under DDP a
        collective: every rank must call it. Each rank's dropout draws as many numbers as its share
        of the batch has activations, so the ranks' states part ways, and only its own continues a
        rank's run exactly."""
        return distributed.gathered(self._own_rng())

    def _own_rng(self) -> dict:
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        }

    def checkpoint(self, ranks_rng: list[dict] | None = None) -> dict:
        """The run's whole state. ranks_rng: every rank's random state (ranks_rng()), for rank 0 of
        several to save; by default this process's own alone."""
        return {
            "model_config": asdict(self.model_config),
            "train_config": asdict(self.config),
            "vocab": "".join(self.splits.vocab.chars),
            "data_fingerprint": self.splits.fingerprint,
            "train_words": "\n".join(self.splits.train),  # so that `sample` marks names the data holds
            "held_out_words": "\n".join(self.splits.val + self.splits.test),  # (sampling.Seen)
            "labels": self.splits.label_columns.saved() if self.splits.label_columns else None,  # their names
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "best_val_loss": self.best_val_loss,
            "seconds": self.seconds,
            "rng": {
                "batches": self.generator.get_state(),
                "torch": torch.get_rng_state(),  # dropout on the CPU
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],  # and on GPUs
                "ranks": ranks_rng or [self._own_rng()],  # each rank's own, under DDP
            },
            "run_id": self.context.run_id,  # torchrun's job: a worker group it restarts continues this file
            "train_losses": torch.tensor(self.train_losses, dtype=torch.float32),
            "history": self.history,
        }

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: dict,
        splits: Splits,
        device: torch.device,
        overrides: dict | None = None,
        context: distributed.Context | None = None,
    ) -> "Trainer":
        """Continue a run on `device`, as `context`'s rank (by default the one process). `overrides`
        (config fields) may change the options declared resumable, such as steps (a longer run);
        every other option is the saved run's, and may only be given that value. With as many ranks
        as saved it, each rank takes its own random state back; with another number, every rank
        takes rank 0's."""
        context = context or distributed.Context()
        overrides = overrides or {}
        # an option given its saved value changes nothing: the command that started the run, with --resume, resumes it
        fixed = changed_settings(checkpoint["model_config"], checkpoint["train_config"], overrides, RESUMABLE)
        if fixed:
            raise OptionError(fixed, "cannot change when a run resumes: it continues the saved run")
        overrides = {name: value for name, value in overrides.items() if name in RESUMABLE}  # the rest: as saved
        if splits.fingerprint != checkpoint["data_fingerprint"]:
            raise ValueError("the data differs from the data this checkpoint was trained on; resuming needs the same")
        config = TrainConfig(**{**checkpoint["train_config"], **overrides})
        if config.steps < checkpoint["step"]:
            raise OptionError(
                "steps",
                f"{config.steps} is behind the saved run, at step {checkpoint['step']}: "
                "a resumed run can only go on from there",
            )
        trainer = cls(
            ModelConfig(**checkpoint["model_config"]),
            config,
            splits,
            device,
            checkpoint["step"],
            checkpoint["best_val_loss"],
            checkpoint["seconds"],
            checkpoint["train_losses"].tolist(),
            list(checkpoint["history"]),
            context=context,
        )
        trainer.model.load_state_dict(checkpoint["model"])
        trainer.optimizer.load_state_dict(checkpoint["optimizer"])
        rng = checkpoint["rng"]
        trainer.generator.set_state(rng["batches"])
        ranks = rng.get("ranks", [])  # (not in a checkpoint of an earlier version)
        own = ranks[context.rank] if len(ranks) == context.world_size else None
        torch.set_rng_state(own["torch"] if own else rng["torch"])
        if own and own["cuda"] is not None and device.type == "cuda":
            torch.cuda.set_rng_state(own["cuda"], device)
        elif rng.get("cuda") and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng["cuda"])
        return trainer


def compiled(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """torch.compile's version of `module`, for a training step. Shapes are dynamic from the start, so
    that it compiles once, not once per new shape; and a fixed-shape step's batches come in a few
    shapes (NameBatches.sample), so that on a GPU, in one process, each is captured as CUDA graphs
    ("reduce-overhead"): a small batch's step is then a few launches, not hundreds. (Under DDP the
    all-reduces run between graphs, where they would have to be captured too: no graphs there.)"""
    graphs = device.type == "cuda" and not isinstance(module, DistributedDataParallel)
    return torch.compile(module, dynamic=True, mode="reduce-overhead" if graphs else None)


def parameter_groups(model: torch.nn.Module) -> tuple[list, list]:
    """The parameters that weight decay shrinks, and the rest: weight matrices decay (Linear's,
    Conv1d's kernels); embeddings, BatchNorm and LayerNorm gains, and biases do not."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    decay = [p for p in model.parameters() if p.ndim >= 2 and id(p) not in embeddings]
    rest = [p for p in model.parameters() if p.ndim < 2 or id(p) in embeddings]
    return decay, rest


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
        super().__init__(
            f"training diverged: the validation loss is {val_loss} at step {step}; try a smaller --lr ({kept})"
        )
        self.step = step


class TrainingInterrupted(Exception):
    """Ctrl-C: `path` (a last.pt) saved at `step`; `out` is the directory that `train --resume` continues
    (the run's own, or the ensemble's that the run is a member of)."""

    def __init__(self, step: int, path: Path, out: Path | None = None):
        super().__init__(f"interrupted at step {step}; saved {path}")
        self.step, self.path, self.out = step, path, out or path.parent

    def __reduce__(self):  # from a process that trained an ensemble's member (runs.run_ensemble)
        return TrainingInterrupted, (self.step, self.path, self.out)


def fit(
    trainer: Trainer,
    out: Path,
    on_step: Callable[[int, torch.Tensor, float], None] | None = None,
    on_eval: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict:
    """Train to config.steps, evaluating every eval_every steps, or until config.patience or
    config.max_time stops it sooner, with an evaluation there (trainer.stopped then says why). Writes into `out`:
    last.pt (the latest state, for --resume and restarts: at every evaluation, and every
    checkpoint_every steps), model.pt (the best by validation loss) and metrics.jsonl (one record per
    evaluation). When should_stop() turns true (the CLI's Ctrl-C), saves last.pt at a step boundary
    and raises TrainingInterrupted; when the validation loss is nan or inf, raises TrainingDiverged,
    with last.pt and model.pt as the last finite evaluation left them. Returns the last evaluation
    record."""
    out.mkdir(parents=True, exist_ok=True)
    config, record = trainer.config, None
    recent, positions, t0 = [], 0, time.perf_counter()  # since the last evaluation: losses (tensors), its rate
    saved_at = t0  # when trainer.seconds last took in the time since
    main = trainer.context.is_main  # only rank 0 evaluates and writes

    def bank() -> list[dict]:
        """Into the trainer, what a checkpoint must hold (every step's loss, the time); on every rank."""
        nonlocal recent, saved_at
        now = time.perf_counter()
        trainer.train_losses += torch.stack(recent).float().tolist() if recent else []
        trainer.seconds += now - saved_at
        recent, saved_at = [], now
        return trainer.ranks_rng()  # a collective: every rank, at the same step

    def time_up() -> bool:  # every rank agrees: each measures its own time
        if config.max_time is None:
            return False
        spent = trainer.seconds + time.perf_counter() - saved_at >= config.max_time
        return distributed.any_rank(spent, trainer.device)

    # a resumed run whose time was spent trains no further; a run with no evaluation yet trains to one
    evaluated = distributed.any_rank(bool(trainer.history), trainer.device)  # (rank 0 keeps the history)
    trainer.stopped = _stop_reason(trainer, time_up()) if evaluated else None
    while trainer.step < config.steps and trainer.stopped is None:
        if distributed.any_rank(should_stop(), trainer.device):
            ranks_rng = bank()
            if main:
                save_checkpoint(trainer.checkpoint(ranks_rng), out / "last.pt")
            raise TrainingInterrupted(trainer.step, out / "last.pt")
        loss, n = trainer.train_step()
        recent.append(loss)
        positions += n
        if on_step is not None:
            on_step(trainer.step, loss, positions / (time.perf_counter() - t0 + 1e-9))
        out_of_time = time_up()
        if trainer.step % config.eval_every == 0 or trainer.step == config.steps or out_of_time:
            ranks_rng = bank()
            if main:
                record = _evaluation(trainer, out, ranks_rng, positions, time.perf_counter() - t0)
                if on_eval is not None:
                    on_eval(record)
            positions, t0 = 0, time.perf_counter()
            saved_at = t0  # the evaluation's time is not training time
            trainer.stopped = _stop_reason(trainer, out_of_time)
        elif config.checkpoint_every and trainer.step % config.checkpoint_every == 0:
            ranks_rng = bank()
            if main:
                save_checkpoint(trainer.checkpoint(ranks_rng), out / "last.pt")
    return record


def _stop_reason(trainer: Trainer, out_of_time: bool) -> str | None:
    """Why training stops here, before config.steps, or None: the time is spent, or the validation
    loss has not improved for config.patience evaluations (rank 0's history, which every rank hears)."""
    config, history = trainer.config, trainer.history
    if out_of_time:
        return f"its --max-time of {config.max_time:g} s of training is spent"
    if config.patience is None:
        return None
    best = min(range(len(history)), key=lambda i: history[i]["val_loss"], default=None)  # the first of equals
    since = 0 if best is None else len(history) - 1 - best
    if not distributed.any_rank(since >= config.patience, trainer.device):
        return None
    if best is None:  # a rank other than 0, which keeps no history
        return "val has not improved (--patience)"
    return f"val has not improved for {since} evaluations, since step {history[best]['step']} (--patience)"


def _evaluation(trainer: Trainer, out: Path, ranks_rng: list[dict], positions: int, seconds: float) -> dict:
    val_loss = evaluate(trainer.model, trainer.val_batches)
    if not math.isfinite(val_loss):  # before anything is written: last.pt keeps the last state worth resuming
        best = min(trainer.history, key=lambda r: r["val_loss"], default=None)
        raise TrainingDiverged(trainer.step, val_loss, best["step"] if best else None)
    improved = val_loss < trainer.best_val_loss
    trainer.best_val_loss = min(val_loss, trainer.best_val_loss)
    # every step since the last evaluation, those before a Ctrl-C or a crash included
    since = trainer.train_losses[-(trainer.step - (trainer.history[-1]["step"] if trainer.history else 0)) :]
    record = {
        "step": trainer.step,
        "train_loss": sum(since) / len(since),  # mean training-batch loss since the last evaluation
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
    checkpoint = trainer.checkpoint(ranks_rng)
    if improved:
        save_checkpoint(checkpoint, out / "model.pt")
    save_checkpoint(checkpoint, out / "last.pt")
    if first:
        for stale in ("metrics.json", "loss.png"):
            (out / stale).unlink(missing_ok=True)
    # written whole from the history that last.pt holds, not appended: a run restarted from last.pt
    # has the records it had, never a line twice or half a line
    write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in trainer.history))
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
        **({"stopped": trainer.stopped} if trainer.stopped else {}),
        "model": asdict(trainer.model_config),
        "train_config": asdict(trainer.config),
    }
    if trainer.config.report_test:  # once, of the model chosen by val
        test = trainer.splits.batches("test", model, trainer.device)
        metrics["test_loss"] = evaluate(model, test)
    write_json(metrics, out / "metrics.json")
    plot_losses(trainer.train_losses, trainer.history, out / "loss.png")
    return metrics, model.eval()
