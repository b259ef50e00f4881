"""A kind of model from outside the package, added the way docs/how-it-works.md says a kind is added:
one module with the class, the dataclass of the options it reads, and its Kind, registered. The
tests (test_kinds.py) register it, then train, resume, evaluate, score, sample, serve and race it.

makemore's simplest model: the next character's logits are a row of a table, chosen by the last.
"""

from dataclasses import dataclass

import torch
from torch import nn

from wavenet_names.batches import NameBatches
from wavenet_names.kinds import Kind
from wavenet_names.losses import language_model_loss
from wavenet_names.options import OptionError, option


class Bigram(nn.Module):
    """logits[t] = table[idx[t]]: a model of whole names whose context is one character."""

    block_size = 1  # the one '.' before a name in its batches (data.pad_batch)

    def __init__(self, vocab_size: int, spread: float):
        super().__init__()
        self.table = nn.Embedding(vocab_size, vocab_size)
        nn.init.normal_(self.table.weight, std=spread)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, labels: torch.Tensor | None = None):
        logits = self.forward_full(idx, labels)  # (B, T, vocab): one prediction per character read
        return logits, language_model_loss(logits, targets)

    def forward_full(self, idx: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is not None:
            raise ValueError("the bigram model takes no labels")
        return self.table(idx)

    def init_state(self, batch_size: int, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Nothing carries over from one character to the next but the character: an empty state."""
        if labels is not None:
            raise ValueError("the bigram model takes no labels")
        return torch.zeros(batch_size, 0)

    def step(self, token: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.table(token), state


@dataclass(frozen=True)
class BigramOptions:
    spread: float = option(0.1, "the standard deviation of the table's initial entries")

    def __post_init__(self):
        if not self.spread >= 0:
            raise OptionError("spread", f"must be a number, not negative, got {self.spread}")


KIND = Kind(
    name="bigram",
    summary="makemore's bigram: the next character's distribution, given the last",
    model=Bigram,
    options=BigramOptions,
    build=lambda options, facts: Bigram(facts.vocab_size, options.spread),
    batches=NameBatches,
    recipe=dict(steps=300, lr=0.1, warmup=0, weight_decay=0.0, eval_every=100),
    cached=True,
)
