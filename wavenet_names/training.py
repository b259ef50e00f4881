"""Training: a run's whole state (Trainer), one optimizer step for every kind of model, and the
checkpoint that resumes it exactly; fitting.py is the loop that trains it to its end.

ConvWaveNet trains on whole names (a batch of names, every position in one pass); the per-position
models train as the lecture does, on random batches of windows.
"""

import math
from dataclasses import asdict, dataclass, field

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

from . import distributed
from .configuration import RESUMABLE, TrainConfig, changed_settings, saved_configs
from .distill import distilled_loss, teacher_probabilities
from .layers import sync_batchnorm
from .models import ModelConfig, batches_for, build_model, kind_named
from .options import OptionError
from .precision import autocast, matmuls, resolve_precision
from .splits import Splits, seen_record


def learning_rate(config: TrainConfig, step: int, seconds: float = 0.0) -> float:
    """The learning rate for the update that takes the model from `step` to `step + 1`, after `seconds`
    of training (which a schedule over --max-time follows)."""
    if config.schedule == "step":
        return config.lr if progress(config, step, seconds, warmup=0) < 0.75 else config.lr / 10
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    if config.schedule == "constant":
        return config.lr
    done = progress(config, step, seconds, config.warmup)
    return config.lr / 10 + (config.lr - config.lr / 10) * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))


def progress(config: TrainConfig, step: int, seconds: float, warmup: int) -> float:
    """How far a run is through its schedule, after `warmup` steps: by its steps, by its time
    (--max-time), or with both, by whichever is further along, so that the schedule ends when the
    first of them does. Without --max-time, the steps' fraction alone, as it always was."""
    by_steps = None if config.steps is None else (step - warmup) / max(1, config.steps - warmup)
    by_time = None if config.max_time is None else seconds / config.max_time
    return max(done for done in (by_steps, by_time) if done is not None)


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
    chosen: str | None = None  # why --max-time chose this model's size (budget.Choice.line), if it did
    base: dict | None = None  # the model a fine-tune started from (finetune.record), if it did

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
        if self.model_config.facts.label_sizes != self.splits.label_sizes:
            raise ValueError(
                f"the model's label sizes {self.model_config.facts.label_sizes} are not the data's "
                f"{self.splits.label_sizes}"
            )
        self.precision = resolve_precision(self.config.precision, self.device)  # before any work: it may refuse
        torch.manual_seed(self.config.seed)
        self.model = build_model(self.model_config).to(self.device)  # the raw module: what checkpoints hold
        self.forward = self._trainable(self.model)  # what trains: see distribute() and _trainable()
        self.train_batches = batches_for(self.model, self.splits, "train", self.device)
        if self.config.teacher is not None:  # its probabilities, once for the run
            teacher = self.config.teacher, self.splits, self.config.distill_temperature, self.device
            self.train_batches.soft = teacher_probabilities(*teacher)
        self.val_batches = batches_for(self.model, self.splits, "val", self.device)
        self.optimizer = self._make_optimizer()
        self.generator = torch.Generator().manual_seed(self.config.seed)  # draws the batches
        self.lr = learning_rate(self.config, self.step, self.seconds)  # the last update's (train_step sets it)

    @property
    def epochs(self) -> float:
        """Passes over the training split so far: names (conv) or windows drawn, over how many there are."""
        return self.step * self.config.batch_size / len(self.train_batches)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        if self.config.optimizer == "sgd":
            return torch.optim.SGD(self.model.parameters(), lr=self.config.lr)
        decay, rest = parameter_groups(self.model)
        groups = [{"params": decay, "weight_decay": self.config.weight_decay}, {"params": rest, "weight_decay": 0.0}]
        # a resumed run keeps the update it was saved with: the checkpoint's groups say which
        return torch.optim.AdamW(groups, lr=self.config.lr, fused=fuses_adamw(self.device))

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

    def train_step(self, seconds: float = 0.0) -> tuple[torch.Tensor, int]:
        """One update, after `seconds` of training (the clock a schedule over --max-time follows: every
        rank's the same); returns the batch loss (a tensor, so that the GPU need not wait) and how
        many positions this rank trained."""
        rank, world_size = self.context.rank, self.context.world_size
        # compiled, every batch comes in one of a few shapes (see NameBatches.sample), each captured once
        fixed_shapes = self.config.compile and kind_named(self.model_config.kind).fixed_shapes
        batch = self.train_batches.sample(self.config.batch_size, self.generator, rank, world_size, fixed_shapes)
        fixed = {} if batch.rows is None else {"rows": batch.rows}
        self.lr = learning_rate(self.config, self.step, seconds)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        self.model.train()
        try:
            with matmuls(self.precision):  # TF32 or not, forward and backward alike
                with autocast(self.precision, self.device):
                    # this rank's mean, in float32
                    logits, loss = self.forward(batch.inputs, batch.targets, labels=batch.labels, **fixed)
                    fitted = loss  # the data's cross-entropy: what a step reports, distilled or not
                    if batch.soft is not None:
                        config = self.config
                        fitted = distilled_loss(
                            logits, batch.targets, loss, batch.soft, config.distill_temperature, config.distill_weight
                        )
                self.optimizer.zero_grad(set_to_none=True)
                (fitted * batch.weight).backward()  # averaged over ranks: the mean over the whole batch's positions
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
            "model_config": self.model_config.saved(),
            "train_config": asdict(self.config),
            "vocab": "".join(self.splits.vocab.chars),
            "data_fingerprint": self.splits.fingerprint,
            **seen_record(self.splits),  # so that `sample` marks names the data holds (splits.Seen)
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
            "chosen": self.chosen,
            "base": self.base,
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
        saved = saved_configs(checkpoint["model_config"], checkpoint["train_config"])
        fixed = changed_settings(saved, overrides, RESUMABLE)
        if fixed:
            raise OptionError(fixed, "cannot change when a run resumes: it continues the saved run")
        overrides = {name: value for name, value in overrides.items() if name in RESUMABLE}  # the rest: as saved
        if splits.fingerprint != checkpoint["data_fingerprint"]:
            raise ValueError("the data differs from the data this checkpoint was trained on; resuming needs the same")
        config = TrainConfig(**{**checkpoint["train_config"], **overrides})
        if config.steps is not None and config.steps < checkpoint["step"]:
            raise OptionError(
                "steps",
                f"{config.steps} is behind the saved run, at step {checkpoint['step']}: "
                "a resumed run can only go on from there",
            )
        trainer = cls(
            saved[0],
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
        trainer.chosen = checkpoint.get("chosen")  # (not in a checkpoint of an earlier version)
        trainer.base = checkpoint.get("base")
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


def fuses_adamw(device: torch.device) -> bool:
    """Whether AdamW runs fused on `device`: one kernel per parameter group instead of a dozen operators
    per parameter. On the CPU that took the default model's update from 332 operators to 88, a 1.05x
    faster step; its weights differ from the unfused update's in the rounding alone (the default
    train's val and names are the same)."""
    return device.type in _get_fused_kernels_supported_devices()


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
