"""A run's state and its step (training.py): resume refuses other data, the learning rate's
schedules, precision and compile, evaluation interrupted, what every kind learns with its own
recipe, and which parameters weight decay shrinks."""

import math
from collections import Counter

import pytest
import torch

from wavenet_names.checkpoint import load_checkpoint
from wavenet_names.configuration import TrainConfig, settings
from wavenet_names.fitting import fit
from wavenet_names.models import KINDS
from wavenet_names.packing import bucket
from wavenet_names.precision import matmuls, resolve_precision
from wavenet_names.scoring import evaluate
from wavenet_names.splits import Splits
from wavenet_names.training import Trainer, learning_rate
from wavenet_names.words import Vocab

from helpers import reads, small_run


@pytest.fixture
def splits(all_words):
    return Splits.from_words(all_words[:400])


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
    from wavenet_names.scoring import evaluate, score

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
