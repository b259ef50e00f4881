"""The training loop: exact resume, Ctrl-C, checkpoints."""

import json
import math
from collections import Counter

import pytest
import torch

from wavenet_names import training
from wavenet_names.checkpoint import load_checkpoint
from wavenet_names.configuration import TrainConfig, settings
from wavenet_names.data import Vocab
from wavenet_names.models import KINDS
from wavenet_names.packing import bucket
from wavenet_names.precision import matmuls, resolve_precision
from wavenet_names.scoring import evaluate
from wavenet_names.splits import Splits
from wavenet_names.training import Trainer, TrainingInterrupted, fit, learning_rate

from helpers import reads, small_run


@pytest.fixture
def splits(all_words):
    return Splits.from_words(all_words[:400])


@pytest.mark.parametrize(
    "kind, optimizer",
    [("conv", "adamw"), ("hierarchical", "sgd"), ("flat", "sgd"), ("transformer", "adamw"), ("gru", "adamw")],
)
def test_interrupt_then_resume_equals_one_run(splits, tmp_path, kind, optimizer):
    whole = small_run(splits, kind, optimizer=optimizer)
    fit(whole, tmp_path / "whole")

    first = small_run(splits, kind, optimizer=optimizer)
    with pytest.raises(TrainingInterrupted) as stopped:
        fit(first, tmp_path / "split", should_stop=lambda: first.step == 12)  # Ctrl-C after step 12
    assert stopped.value.step == 12
    checkpoint = load_checkpoint(tmp_path / "split" / "last.pt")
    assert checkpoint["step"] == 12
    resumed = Trainer.from_checkpoint(checkpoint, splits, torch.device("cpu"))
    fit(resumed, tmp_path / "split")

    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert resumed.train_losses == pytest.approx(whole.train_losses, abs=0)
    assert len(resumed.train_losses) == 30


def test_patience_stops_when_val_has_not_improved_for_that_many_evaluations(splits, tmp_path, monkeypatch):
    """A small list over-trains: its best val came at step 500 and rose after. Here the validation
    losses are given, so that when it stops is known."""
    val_losses = iter([3.0, 2.0, 2.5, 2.0, 1.0])  # the best at the 2nd evaluation; the 4th only equals it
    monkeypatch.setattr(training, "evaluate", lambda model, batches: next(val_losses, 0.5))
    trainer = small_run(splits, eval_every=1, patience=2)
    fit(trainer, tmp_path)
    assert trainer.step == 4 and [r["step"] for r in trainer.history] == [1, 2, 3, 4]
    assert trainer.stopped == "val has not improved for 2 evaluations, since step 2 (--patience)"
    assert load_checkpoint(tmp_path / "model.pt")["step"] == 2 and load_checkpoint(tmp_path / "last.pt")["step"] == 4
    assert training.finish(trainer, tmp_path)[0]["stopped"] == trainer.stopped


def test_max_time_stops_at_that_much_training_and_evaluates_there(splits, tmp_path, monkeypatch):
    """--max-time counts training time over resumed sessions alike: a clock here that moves 1 s a step."""
    now = [0.0]
    monkeypatch.setattr(training.time, "perf_counter", lambda: now[0])

    def timed(trainer):
        step = trainer.train_step
        trainer.train_step = lambda: (now.__setitem__(0, now[0] + 1.0), step())[1]
        return trainer

    trainer = timed(small_run(splits, max_time=5.5))  # evaluations every 7 steps
    fit(trainer, tmp_path)
    assert trainer.step == 6 and [r["step"] for r in trainer.history] == [6]  # evaluated where it stopped
    assert trainer.stopped == "its --max-time of 5.5 s of training is spent" and trainer.seconds == 6.0
    for max_time, steps, evaluations in [(5.5, 6, [6]), (8.5, 9, [6, 7, 9])]:  # resumed: the same limit, then more
        checkpoint = load_checkpoint(tmp_path / "last.pt")
        resumed = timed(Trainer.from_checkpoint(checkpoint, splits, torch.device("cpu"), {"max_time": max_time}))
        fit(resumed, tmp_path)
        assert resumed.step == steps and [r["step"] for r in resumed.history] == evaluations


def test_checkpoints_and_metrics(splits, tmp_path):
    trainer = small_run(splits)
    fit(trainer, tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [7, 14, 21, 28, 30]
    best = load_checkpoint(tmp_path / "model.pt")
    assert best["best_val_loss"] == min(r["val_loss"] for r in records)
    assert best["step"] == min(records, key=lambda r: r["val_loss"])["step"]
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 30
    assert records[-1]["val_loss"] < records[0]["val_loss"] + 0.5  # sane, not diverged


def test_a_new_run_replaces_an_earlier_runs_metrics_at_its_first_evaluation(splits, tmp_path):
    """train --overwrite: the earlier run's figures stay until the new run has its own, then go."""
    fit(small_run(splits, steps=14), tmp_path)
    (tmp_path / "metrics.json").write_text("{}")  # as finish() leaves it
    again = small_run(splits, steps=10, eval_every=5)
    with pytest.raises(TrainingInterrupted):
        fit(again, tmp_path, should_stop=lambda: again.step == 3)  # stopped before its first evaluation
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [7, 14]
    assert (tmp_path / "metrics.json").exists()
    fit(again, tmp_path)
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [5, 10]
    assert not (tmp_path / "metrics.json").exists()


def test_resume_refuses_other_data(splits, all_words, tmp_path):
    trainer = small_run(splits, steps=3)
    fit(trainer, tmp_path)
    other = Splits.from_words(all_words[400:800], splits.vocab)
    with pytest.raises(ValueError, match="data differs"):
        Trainer.from_checkpoint(load_checkpoint(tmp_path / "last.pt"), other, torch.device("cpu"))


def test_learning_rate_schedules():
    step = TrainConfig(steps=200_000, lr=0.1, schedule="step")
    assert learning_rate(step, 149_999) == 0.1 and learning_rate(step, 150_000) == pytest.approx(0.01)
    cosine = TrainConfig(steps=1000, lr=1.0, warmup=100, schedule="cosine")
    assert learning_rate(cosine, 0) == pytest.approx(0.01)
    assert learning_rate(cosine, 99) == pytest.approx(1.0)
    assert learning_rate(cosine, 999) == pytest.approx(0.1, abs=1e-4)


def test_precision_is_chosen_per_device_and_tf32_needs_a_gpu():
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == "tf32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(ValueError, match="tf32 is a CUDA GPU format"):
        resolve_precision("tf32", torch.device("cpu"))
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="fp16")


def test_bf16_on_a_gpu_without_it_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla P100")
    with pytest.raises(ValueError, match="Tesla P100 has no bfloat16"):
        resolve_precision("bf16", torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_precision("bf16", torch.device("cuda")) == "bf16"


@pytest.mark.parametrize("precision, inside", [("tf32", "tf32"), ("fp32", "ieee"), ("bf16", "ieee")])
def test_tf32_matmuls_are_on_only_inside_and_the_setting_is_restored(precision, inside):
    cuda = torch.backends.cuda.matmul
    if not hasattr(cuda, "fp32_precision"):
        pytest.skip("torch < 2.9 has only the allow_tf32 switch")
    before = cuda.fp32_precision
    with matmuls(precision):
        assert cuda.fp32_precision == inside
    assert cuda.fp32_precision == before


@pytest.mark.parametrize("kind", ["conv", "hierarchical"])
def test_bf16_training_is_autocast_with_float32_weights_and_loss(splits, kind):
    exact, mixed = small_run(splits, kind, precision="fp32"), small_run(splits, kind, precision="bf16")
    exact_loss, _ = exact.train_step()
    mixed_loss, _ = mixed.train_step()  # same seed: same weights and batch, arithmetic apart
    assert mixed.precision == "bf16" and mixed_loss.dtype == torch.float32
    assert mixed_loss == pytest.approx(float(exact_loss), rel=0.02)
    for name, b in mixed.model.named_parameters():
        assert b.dtype == torch.float32 and b.grad.dtype == torch.float32, name
    # autocast really ran: bf16's 8-bit mantissa moves the gradients, a little
    grads = [(a.grad, b.grad) for a, b in zip(exact.model.parameters(), mixed.model.parameters(), strict=True)]
    assert any(not torch.equal(a, b) for a, b in grads)
    assert all(torch.allclose(a, b, rtol=0.1, atol=1e-3) for a, b in grads)


class GraphCounter:
    """A torch.compile backend that runs each captured graph as it is (no code generation: fast) and
    counts them: one call per graph compiled."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, graph_module, example_inputs):
        self.graphs += 1
        return graph_module.forward


@pytest.fixture
def compile_with(monkeypatch):
    """Make Trainer's torch.compile use the given backend; forget what earlier tests compiled."""
    compile = torch.compile

    def use(backend):
        torch._dynamo.reset()
        monkeypatch.setattr(torch, "compile", lambda module, **options: compile(module, backend=backend, **options))

    yield use
    torch._dynamo.reset()


@pytest.mark.parametrize("kind, precision", [("conv", "fp32"), ("conv", "bf16"), ("hierarchical", "fp32")])
def test_compiled_training_equals_eager_and_compiles_once_for_every_batch_shape(splits, kind, precision, compile_with):
    counter = GraphCounter()
    compile_with(counter)
    eager, compiled = (
        small_run(splits, kind, precision=precision),
        small_run(splits, kind, precision=precision, compile=True),
    )
    close = dict(rtol=1e-4, atol=1e-5) if precision == "fp32" else dict(rtol=0.02, atol=2e-3)  # bf16: 8-bit mantissa
    shapes, draw = set(), compiled.train_batches.sample

    def recorded(*args, **kwargs):
        batch = draw(*args, **kwargs)
        shapes.add((*batch.inputs.shape, batch.rows))
        return batch

    compiled.train_batches.sample = recorded
    for step in range(8):
        eager_loss, _ = eager.train_step()
        compiled_loss, _ = compiled.train_step()
        assert float(compiled_loss) == pytest.approx(float(eager_loss), rel=close["rtol"] / 10), step
        if step == 0:
            graphs = counter.graphs  # what the first step compiled
    assert counter.graphs == graphs > 0  # whatever the batch's shape, nothing compiled again
    if kind == "conv":  # names of different lengths: batches of a few fixed shapes, in buckets
        assert len(shapes) > 1 and all(rows == bucket(rows) for *_, rows in shapes), shapes
    for (name, a), b in zip(eager.model.state_dict().items(), compiled.model.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, **close, msg=name)  # BatchNorm buffers included


def test_a_failing_compile_names_the_option(splits, compile_with):
    def no_compiler(graph_module, example_inputs):
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")

    compile_with(no_compiler)
    trainer = small_run(splits, compile=True)
    message = r"^compile failed: torch.compile raised RuntimeError: .*No working C\+\+ compiler.*; train without it"
    with pytest.raises(ValueError, match=message):
        trainer.train_step()


def test_out_of_memory_while_compiling_is_not_called_a_compiler_failure(splits, compile_with):
    def out_of_memory(graph_module, example_inputs):  # as inductor's autotuning on a full GPU
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    compile_with(out_of_memory)
    trainer = small_run(splits, compile=True)
    with pytest.raises(torch.cuda.OutOfMemoryError, match="Tried to allocate 2.00 GiB"):  # the CLI says so in a line
        trainer.train_step()


@pytest.mark.parametrize("measure", ["evaluate", "score"])
def test_an_interrupted_evaluation_leaves_the_model_in_training_mode(splits, measure):
    """Ctrl-C during an evaluation in a notebook must not leave a training model in eval mode, where
    BatchNorm would go on training with its running statistics."""
    from wavenet_names.scoring import score
    from wavenet_names.training import evaluate

    model = small_run(splits).model.train()
    words = splits.words("val")

    class Interrupting:
        n_examples = 1

        def chunks(self, size):
            raise KeyboardInterrupt

    def interrupt(*args):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        if measure == "evaluate":
            evaluate(model, Interrupting())
        else:
            model.register_forward_pre_hook(interrupt)
            score(model, splits.vocab, words)
    assert model.training


def best_possible_loss(names: list[str]) -> float:
    """The lowest mean loss any model can reach on `names` seen whole: each next character given the
    whole prefix before it. It is not 0, because several names share a prefix (every name shares the
    empty one: their first letters are a genuine choice)."""
    after = Counter((w[:i], (w + ".")[i]) for w in names for i in range(len(w) + 1))
    prefixes = Counter(w[:i] for w in names for i in range(len(w) + 1))
    return -sum(n * math.log(n / prefixes[prefix]) for (prefix, _), n in after.items()) / sum(prefixes.values())


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_memorises_16_names(kind, all_words):
    """A model that can learn overfits a few names to the best loss there is on them, in a few
    hundred steps of the package's own training step. Names of up to 7 characters: a context of 8
    sees all of each."""
    names = [w for w in all_words if len(w) <= 7][::997][:16]
    splits = Splits(names, names, names, Vocab.from_words(all_words), "16 names")
    context = {"block_size": 8} if "block_size" in reads(kind) else {}
    if kind == "transformer":  # makemore's 204K parameters learn these names too, but take 4 times as long
        context.update(n_embd=16, n_layers=2, dropout=0.0)  # its recipe's dropout holds memorising back
    options = {
        "model": kind,
        **context,
        "steps": 300,
        "batch_size": 64,
        "optimizer": "adamw",
        "lr": 1e-2,
        "schedule": "cosine",
        "warmup": 0,
        "weight_decay": 0.0,
    }
    trainer = Trainer(*settings(options, splits.facts), splits)
    for _ in range(300):
        trainer.train_step()
    best = best_possible_loss(names)
    assert best > 0.3  # the first letters alone cost this much
    assert evaluate(trainer.model, trainer.train_batches) < best + 0.02


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kinds_own_recipe_lowers_the_validation_loss(kind, all_words):
    """200 steps of each kind's defaults and recipe (AdamW for conv, the lecture's SGD for the
    per-position models, their tuned AdamW for makemore's models), on the real names: from about the uniform
    guess, log 27 = 3.30, well down. (makemore's Transformer keeps PyTorch's initialisation, whose
    logits start further from uniform.)"""
    splits = Splits.from_words(all_words[:10_000])  # val: 1,000 names, each evaluated twice
    trainer = Trainer(*settings({"model": kind, "steps": 200}, splits.facts), splits)
    before = evaluate(trainer.model, trainer.val_batches)
    for _ in range(200):
        trainer.train_step()
    after = evaluate(trainer.model, trainer.val_batches)
    assert before == pytest.approx(math.log(27), abs=0.2 if kind == "transformer" else 0.03)
    assert after < before - 0.5


@pytest.mark.parametrize(
    "options, decayed",
    [
        ({"model": "conv"}, ["layers.0.conv.weight", "layers.1.conv.weight", "lm_head.weight"]),
        (
            {"model": "conv", "n_layers": 3, "gated": True, "residual": True, "skip": True, "norm": "none"},
            [
                "layers.0.conv.weight",
                "layers.0.skip.weight",
                "layers.1.conv.weight",
                "layers.1.residual.weight",
                "layers.1.skip.weight",
                "layers.2.conv.weight",
                "layers.2.skip.weight",
                "lm_head.weight",
            ],
        ),
        ({"model": "hierarchical", "optimizer": "adamw"}, ["tree.0.1.weight", "tree.1.1.weight", "lm_head.weight"]),
        ({"model": "flat", "optimizer": "adamw"}, ["hidden.0.weight", "lm_head.weight"]),
    ],
    ids=["conv", "conv-blocks", "hierarchical", "flat"],
)
def test_adamw_decays_the_weight_matrices_and_nothing_else(splits, options, decayed):
    """Weight decay shrinks what multiplies an input: Linear and Conv1d weights. Not the embedding
    (a lookup table), not the norms' gains and shifts, not a bias."""
    context = {} if options["model"] == "flat" else {"n_layers": 2}  # (flat has no layers to count)
    options = {"n_embd": 8, "n_hidden": 16, **context, "weight_decay": 0.25, **options}
    trainer = Trainer(*settings(options, splits.facts), splits)
    shrink, keep = trainer.optimizer.param_groups
    names = {id(p): name for name, p in trainer.model.named_parameters()}
    assert sorted(names[id(p)] for p in shrink["params"]) == sorted(decayed)
    assert shrink["weight_decay"] == 0.25 and keep["weight_decay"] == 0.0
    assert len(shrink["params"]) + len(keep["params"]) == len(names)  # every parameter trains, once
    assert "wte.weight" in {names[id(p)] for p in keep["params"]}


def test_sgd_decays_nothing(splits):
    trainer = small_run(splits, "hierarchical", optimizer="sgd")
    (group,) = trainer.optimizer.param_groups
    assert group["weight_decay"] == 0 and len(group["params"]) == len(list(trainer.model.parameters()))


# a value other than the default for every option of train: a new option must be added here, and so
# be seen to resume right (changed, if it is resumable; refused, if not)
