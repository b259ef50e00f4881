"""Training: one loop for every model, evaluation over whole splits, checkpoints that resume exactly.

ConvWaveNet trains on whole names (a batch of names, every position in one pass); the per-position
models train as the lecture does, on random batches of windows. The loop never prints: it reports
through callbacks, and the CLI draws the progress bar.
"""

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
from .configuration import RESUMABLE, TrainConfig, changed_settings, saved_configs
from .files import write_json, write_text
from .layers import sync_batchnorm
from .models import ModelConfig, batches_for, build_model, count_params, kind_named
from .options import OptionError
from .plots import plot_losses
from .precision import autocast, matmuls, resolve_precision
from .scoring import evaluate
from .splits import Splits


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
        self.val_batches = batches_for(self.model, self.splits, "val", self.device)
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
        fixed_shapes = self.config.compile and kind_named(self.model_config.kind).fixed_shapes
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
            "model_config": self.model_config.saved(),
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
        saved = saved_configs(checkpoint["model_config"], checkpoint["train_config"])
        fixed = changed_settings(saved, overrides, RESUMABLE)
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


# what runs a Trainer to its end, writing into a directory: the CLI's fit with a progress bar
Runner = Callable[[Trainer, Path], None]


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
    config, record, since, main = trainer.config, None, _Since(trainer), trainer.context.is_main  # rank 0 writes
    # a resumed run whose time was spent trains no further; a run with no evaluation yet trains to one
    evaluated = distributed.any_rank(bool(trainer.history), trainer.device)  # (rank 0 keeps the history)
    trainer.stopped = _stop_reason(trainer, since.time_up()) if evaluated else None
    while trainer.step < config.steps and trainer.stopped is None:
        if distributed.any_rank(should_stop(), trainer.device):
            _save_last(trainer, out, since.bank(), main)
            raise TrainingInterrupted(trainer.step, out / "last.pt")
        loss, n = trainer.train_step()
        since.took(loss, n)
        if on_step is not None:
            on_step(trainer.step, loss, since.rate())
        out_of_time = since.time_up()
        if trainer.step % config.eval_every == 0 or trainer.step == config.steps or out_of_time:
            ranks_rng = since.bank()
            if main:
                record = _evaluation(trainer, out, ranks_rng, since.positions, since.elapsed())
                if on_eval is not None:
                    on_eval(record)
            since.restart()  # the evaluation's time is not training time
            trainer.stopped = _stop_reason(trainer, out_of_time)
        elif config.checkpoint_every and trainer.step % config.checkpoint_every == 0:
            _save_last(trainer, out, since.bank(), main)
    return record


class _Since:
    """What fit keeps since the last evaluation: each step's loss (tensors, so that a GPU need not
    wait), the positions trained and when that began, for the rate; and when trainer.seconds last
    took in the time."""

    def __init__(self, trainer: Trainer):
        self.trainer, self.losses, self.positions = trainer, [], 0
        self.started = self.banked_at = time.perf_counter()

    def took(self, loss: torch.Tensor, positions: int) -> None:
        self.losses.append(loss)
        self.positions += positions

    def rate(self) -> float:
        return self.positions / (self.elapsed() + 1e-9)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def bank(self) -> list[dict]:
        """Into the trainer, what a checkpoint must hold (every step's loss, the time); on every rank.
        Returns every rank's random state (a collective: every rank, at the same step)."""
        trainer, now = self.trainer, time.perf_counter()
        trainer.train_losses += torch.stack(self.losses).float().tolist() if self.losses else []
        trainer.seconds += now - self.banked_at
        self.losses, self.banked_at = [], now
        return trainer.ranks_rng()

    def time_up(self) -> bool:
        """Whether config.max_time is spent; every rank agrees (each measures its own time)."""
        trainer = self.trainer
        if trainer.config.max_time is None:
            return False
        spent = trainer.seconds + time.perf_counter() - self.banked_at >= trainer.config.max_time
        return distributed.any_rank(spent, trainer.device)

    def restart(self) -> None:
        self.positions, self.started = 0, time.perf_counter()
        self.banked_at = self.started


def _save_last(trainer: Trainer, out: Path, ranks_rng: list[dict], main: bool) -> None:
    if main:
        save_checkpoint(trainer.checkpoint(ranks_rng), out / "last.pt")


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
        "model": trainer.model_config.saved(),
        "train_config": asdict(trainer.config),
    }
    if trainer.config.report_test:  # once, of the model chosen by val
        test = batches_for(model, trainer.splits, "test", trainer.device)
        metrics["test_loss"] = evaluate(model, test)
    write_json(metrics, out / "metrics.json")
    plot_losses(trainer.train_losses, trainer.history, out / "loss.png")
    return metrics, model.eval()
