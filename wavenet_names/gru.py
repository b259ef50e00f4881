"""makemore's GRU: a recurrent model of whole names, the strongest of makemore's peers per parameter.

The same model as makemore's RNN(cell_type="gru") (Cho et al. 2014, arXiv:1406.1078; makemore's
own GRUCell, with its parameter count: 28,315 at n_embd 64, n_embd2 64 on data/names.txt). A name
is read one character at a time from a learnt start state; the state after each character predicts
the next. Sampling carries that state forward: one cell step per character, which is its cache.
"""

from dataclasses import dataclass

import torch
from torch import nn

from .batches import NameBatches
from .kinds import MAKEMORE_RECIPE, CharacterRows, Kind
from .losses import language_model_loss
from .options import check_at_least, option
from .splits import Facts


class GRUCell(nn.Module):
    """makemore's GRUCell: a reset gate r, an update gate z and a candidate state hbar, each one
    Linear over [x, h] (n_embd + n_embd2 inputs)."""

    def __init__(self, n_embd: int, n_embd2: int):
        super().__init__()
        self.xh_to_z = nn.Linear(n_embd + n_embd2, n_embd2)
        self.xh_to_r = nn.Linear(n_embd + n_embd2, n_embd2)
        self.xh_to_hbar = nn.Linear(n_embd + n_embd2, n_embd2)

    def forward(self, xt: torch.Tensor, hprev: torch.Tensor) -> torch.Tensor:
        """xt (B, n_embd), hprev (B, n_embd2) -> ht (B, n_embd2)."""
        xh = torch.cat([xt, hprev], dim=1)
        r = torch.sigmoid(self.xh_to_r(xh))
        hbar = torch.tanh(self.xh_to_hbar(torch.cat([xt, r * hprev], dim=1)))  # from the reset state
        z = torch.sigmoid(self.xh_to_z(xh))
        return (1 - z) * hprev + z * hbar


class GRU(nn.Module):
    """forward(idx (B, T), targets (B, T)) -> logits (B, T, vocab), loss: output t has read
    idx[:, : t + 1]. The package's whole-name layout with one '.' before each name (block_size 1) is
    makemore's: idx starts with the '.' token, and targets are the name, its end token, then -1."""

    block_size = 1  # the '.' tokens before a name in its layout (data.pad_batch): its context is unbounded

    def __init__(self, vocab_size: int, n_embd: int = 64, n_embd2: int = 64):
        super().__init__()
        self.start = nn.Parameter(torch.zeros(1, n_embd2))  # the state before the first character
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.cell = GRUCell(n_embd, n_embd2)
        self.lm_head = nn.Linear(n_embd2, vocab_size)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, labels: torch.Tensor | None = None):
        if labels is not None:
            raise ValueError("the gru model takes no labels")
        emb = self.wte(idx)  # (B, T, n_embd)
        h = self.start.expand(idx.shape[0], -1)  # (B, n_embd2)
        states = []
        for t in range(idx.shape[1]):
            h = self.cell(emb[:, t], h)
            states.append(h)
        logits = self.lm_head(torch.stack(states, dim=1))  # (B, T, vocab)
        return logits, language_model_loss(logits, targets)

    def init_state(self, batch_size: int, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The state of batch_size names before their first character, (B, n_embd2): a GRU's whole cache."""
        if labels is not None:
            raise ValueError("the gru model takes no labels")
        return self.start.expand(batch_size, -1)

    def step(self, token: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed one character per row, token (B,); returns the logits (B, vocab) for the next one, and
        the state after it."""
        h = self.cell(self.wte(token), state)  # (B, n_embd2)
        return self.lm_head(h), h


@dataclass(frozen=True)
class GRUOptions:
    """The GRU's options: makemore's sizes."""

    n_embd: int = option(64, "embedding size")
    n_hidden: int = option(64, "the state's size (makemore's n_embd2)")

    def __post_init__(self):
        check_at_least(self, 1, "n_embd", "n_hidden")


def build(options: GRUOptions, facts: Facts) -> GRU:
    return GRU(facts.vocab_size, options.n_embd, options.n_hidden)


# makemore's recipe tuned on val against the clock, as the Transformer's: still falling at 300 s with
# makemore's recipe (2.0025), the GRU overfits at higher rates unless its weights decay more; batches
# of 64, 4 times the rate, weight decay 0.1 and a cosine give 1.9860.
RECIPE = {**MAKEMORE_RECIPE, "batch_size": 64, "lr": 2e-3, "schedule": "cosine", "weight_decay": 0.1, "steps": 36_000}

KIND = Kind(
    name="gru",
    summary="makemore's GRU: a recurrent model of the whole name",
    model=GRU,
    options=GRUOptions,
    build=build,
    batches=NameBatches,
    recipe=RECIPE,
    cached=True,
    windowed=False,
    character_rows=CharacterRows(),
)
