"""A kind of model, declared once, in its own module beside its class: everything the rest of the
package asks about it. Training, evaluation, scoring, sampling, serving, the command line and the
experiments read a model's Kind (models.kind_of) and never test for a kind themselves.

A kind's class keeps the package's contract (makemore's, with labels):

    forward(idx, targets=None, labels=None) -> (logits, loss)   targets of -1 ignored; labels (B, K)
                                                                refused unless the kind is conditional
    block_size                                                  the '.' tokens before a name in its
                                                                batches (data.pad_batch), or a window's
                                                                length (data.windows)
    forward_full(idx, labels=None) -> logits                    every window of block_size columns
                                                                (only if `windowed`)
    init_state(batch_size, labels=None) -> state                generation one character at a time,
    step(token, state) -> (logits, state)                       the state all tensors (only if `cached`)
    step_queued(token, queues, labels=None) -> (logits, queues) step() with nothing written in place,
    queue_shapes() -> [(dilation, width), ...]                  for an ONNX step graph (only if `exports`)

Adding a kind: write its module with the class, the dataclass of the options it reads (each an
options.option, with its help and default; __post_init__ checks them), and its Kind; then register
it (models.register). Its options become flags of `train`, and every command takes it.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from .batches import NameBatches, WindowBatches
from .splits import Facts

# makemore's own recipe for its models (its train.py defaults): batches of 32, AdamW at 5e-4 with
# weight decay 0.01, a constant rate. TrainConfig fields; the base of its models' tuned recipes here.
MAKEMORE_RECIPE = dict(batch_size=32, optimizer="adamw", lr=5e-4, schedule="constant", warmup=0, weight_decay=0.01)


def no_limit(model: nn.Module) -> int | None:
    """A model that reads and writes names of any length."""
    return None


@dataclass(frozen=True)
class CharacterRows:
    """The names of a model's tensors with a row per character, which a fine-tune grows when its list
    brings characters the base does not know (finetune.py): the embedding, and the head's weight and
    bias (a bias is what keeps a new character's logit low at first)."""

    embedding: str = "wte.weight"
    head: str = "lm_head.weight"
    head_bias: str = "lm_head.bias"


@dataclass(frozen=True)
class Kind:
    """One kind of model: everything the rest of the package asks about it."""

    name: str  # what --model takes
    summary: str  # one line, for --help
    model: type[nn.Module]  # its class: how a model's kind is told (models.kind_of)
    options: type  # the dataclass of the options it reads; its defaults are the kind's sizes
    build: Callable[[object, Facts], nn.Module]  # (its options, its data's facts) -> a new model
    batches: type[NameBatches] | type[WindowBatches] = NameBatches  # how a split is fed: whole names, or windows
    recipe: dict = field(default_factory=dict)  # its TrainConfig defaults, where they differ from the fields'
    conditional: bool = False  # takes labels (Facts.label_sizes): a table's label columns
    cached: bool = False  # generates from a state, one step per character (init_state, step)
    # its prediction depends on the last block_size characters alone, so sampling may recompute a
    # window of them (forward_full); a model of whole names (an unbounded context) must have a state
    windowed: bool = True
    fixed_shapes: bool = False  # its forward takes rows: a batch laid out in a bucket (NameBatches.sample)
    needs: tuple[str, ...] = ()  # the Facts it cannot be built without (the Transformer's "longest")
    longest_name: Callable[[nn.Module], int | None] = no_limit  # the most characters it reads or writes in a name
    character_rows: CharacterRows | None = None  # None: a fine-tune of it cannot take new characters
    exports: bool = False  # export.py writes its ONNX graphs (step_queued, queue_shapes, forward_full)
