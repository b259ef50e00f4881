"""makemore's Transformer: causal self-attention over the whole name, the model makemore's users
would pick instead of a WaveNet.

The same model as makemore's (a GPT-2 block, Radford et al. 2019; Vaswani et al. 2017,
arXiv:1706.03762): token and learnt position embeddings, n_layers blocks of pre-norm attention and
an MLP of 4 n_embd with tanh GELU, a final LayerNorm and a head without bias. Its defaults, 4
layers, 4 heads, n_embd 64, have 204,544 parameters on data/names.txt, whose positions are the
longest name and its end token (16). Sampling keeps each layer's keys and values: one new
character attends to those of the characters before it, and nothing is recomputed.

makemore's model has no dropout; this one adds GPT-2's (as nanoGPT places it: on the embeddings,
the attention weights, and each residual branch), off by default, because on 32,000 names it
overfits within minutes of training.
"""

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .batches import NameBatches
from .kinds import MAKEMORE_RECIPE, Kind
from .losses import language_model_loss
from .options import OptionError, check_at_least, check_fraction, option
from .splits import Facts


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, positions: int, dropout: float = 0.0):
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd {n_embd} must be a multiple of n_head {n_head}")
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)  # queries, keys and values of every head at once
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.attn_dropout = nn.Dropout(dropout)  # on the attention weights
        self.resid_dropout = nn.Dropout(dropout)  # on the branch's output, before the residual sum
        mask = torch.tril(torch.ones(positions, positions, dtype=torch.bool))
        self.register_buffer("mask", mask, persistent=False)  # (T, T): position t sees 0..t

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, C) -> q, k, v, each (B, n_head, T, C / n_head)."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        return tuple(t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """makemore's attention, written out: q (B, nh, Tq, hs) over k, v (B, nh, Tk, hs) -> (B, Tq, C)."""
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.shape[-1]))  # (B, nh, Tq, Tk)
        if mask is not None:
            att = att.masked_fill(~mask, float("-inf"))
        y = self.attn_dropout(F.softmax(att, dim=-1)) @ v  # (B, nh, Tq, hs)
        B, _, Tq, _ = y.shape
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(B, Tq, -1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.heads(x)
        T = x.shape[1]
        return self.attend(q, k, v, self.mask[:T, :T])

    def step(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor):
        """x (B, 1, C), one new position, and the keys and values of those before it, (B, nh, t, hs)
        each: its own join them, and it attends to all of them. Returns (y, keys, values)."""
        q, k, v = self.heads(x)
        keys, values = torch.cat([keys, k], dim=2), torch.cat([values, v], dim=2)
        return self.attend(q, keys, values, None), keys, values  # every cached position is earlier: no mask


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, positions: int, dropout: float = 0.0):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, positions, dropout)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = nn.ModuleDict(dict(c_fc=nn.Linear(n_embd, 4 * n_embd), c_proj=nn.Linear(4 * n_embd, n_embd)))
        self.mlp_dropout = nn.Dropout(dropout)

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp_dropout(self.mlp.c_proj(F.gelu(self.mlp.c_fc(x), approximate="tanh")))  # makemore's NewGELU

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.feed_forward(self.ln_2(x))

    def step(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor):
        """Block.forward for one new position x (B, 1, C); returns (x, keys, values) as attn.step."""
        attended, keys, values = self.attn.step(self.ln_1(x), keys, values)
        x = x + attended
        return x + self.feed_forward(self.ln_2(x)), keys, values


class Transformer(nn.Module):
    """forward(idx (B, T), targets (B, T)) -> logits (B, T, vocab), loss: output t has read
    idx[:, : t + 1], T at most `positions`. The package's whole-name layout with one '.' before each
    name (block_size 1) is makemore's: idx starts with the '.' token."""

    block_size = 1  # the '.' tokens before a name in its layout (data.pad_batch)

    def __init__(
        self,
        vocab_size: int,
        positions: int,
        n_embd: int = 64,
        n_head: int = 4,
        n_layers: int = 4,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.positions = positions  # the longest input: a name of positions - 1 characters, and its '.'
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(positions, n_embd)
        self.drop = nn.Dropout(dropout)  # on the summed embeddings
        self.h = nn.ModuleList([Block(n_embd, n_head, positions, dropout) for _ in range(n_layers)])
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, labels: torch.Tensor | None = None):
        if labels is not None:
            raise ValueError("the transformer model takes no labels")
        T = idx.shape[1]
        if T > self.positions:
            raise ValueError(f"an item of {T - 1} characters: this transformer reads at most {self.positions - 1}")
        x = self.drop(self.wte(idx) + self.wpe(torch.arange(T, device=idx.device)))  # (B, T, n_embd)
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))  # (B, T, vocab)
        return logits, language_model_loss(logits, targets)

    def init_state(self, batch_size: int, labels: torch.Tensor | None = None) -> "TransformerState":
        """The state of batch_size names before their first character: no keys or values yet."""
        if labels is not None:
            raise ValueError("the transformer model takes no labels")
        C = self.wte.weight.shape[1]
        heads = self.h[0].attn.n_head if len(self.h) else 1
        empty = self.wte.weight.new_zeros(batch_size, heads, 0, C // heads)  # (B, nh, 0, hs)
        return TransformerState(torch.zeros((), dtype=torch.long), (empty,) * len(self.h), (empty,) * len(self.h))

    def step(self, token: torch.Tensor, state: "TransformerState") -> tuple[torch.Tensor, "TransformerState"]:
        """Feed one character per row, token (B,); returns the logits (B, vocab) for the next one, and
        the state after it."""
        t = int(state.t)
        if t >= self.positions:
            raise ValueError(f"this transformer reads at most {self.positions} positions")
        x = self.drop(self.wte(token) + self.wpe.weight[t])[:, None]  # (B, 1, n_embd)
        keys, values = [], []
        for block, k, v in zip(self.h, state.keys, state.values, strict=True):
            x, k, v = block.step(x, k, v)
            keys.append(k)
            values.append(v)
        return self.lm_head(self.ln_f(x))[:, 0], TransformerState(state.t + 1, tuple(keys), tuple(values))


class TransformerState(NamedTuple):
    """The Transformer's generation state, all tensors: the positions fed so far, t (0-dimensional),
    and per layer the keys and the values of those positions, (B, n_head, t, n_embd / n_head) each."""

    t: torch.Tensor
    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class TransformerOptions:
    """The Transformer's options: makemore's sizes, and the dropout of its tuned recipe."""

    n_embd: int = option(64, "embedding size, and the width of each block")
    n_head: int = option(4, "attention heads; n-embd must be a multiple of it")
    n_layers: int = option(4, "blocks of attention and MLP")
    dropout: float = option(0.1, "GPT-2's dropout: on the embeddings, the attention weights and each branch")

    def __post_init__(self):
        check_at_least(self, 1, "n_embd", "n_head", "n_layers")
        check_fraction(self, "dropout")
        if self.n_embd % self.n_head:
            raise OptionError(("n_embd",), f"{self.n_embd} must be a multiple of {{}} {self.n_head}", ("n_head",))


def build(options: TransformerOptions, facts: Facts) -> Transformer:
    """Its position table holds the data's longest item and its end token (makemore's block_size)."""
    o = options
    return Transformer(facts.vocab_size, facts.longest + 1, o.n_embd, o.n_head, o.n_layers, o.dropout)


# makemore's recipe tuned on val against the clock: the best of experiments/peer-recipes*.json at 300 s
# of training on this split (docs/experiments.md has the table). The Transformer overfits by 150 s at
# makemore's rate; 4 times the rate, dropout 0.1 (its options' default) and a cosine over the steps
# that 300 s reach take it from 2.0053 to 1.9440.
RECIPE = {**MAKEMORE_RECIPE, "lr": 2e-3, "schedule": "cosine", "steps": 15_000}

KIND = Kind(
    name="transformer",
    summary="makemore's Transformer: causal self-attention over the whole name",
    model=Transformer,
    options=TransformerOptions,
    build=build,
    batches=NameBatches,
    recipe=RECIPE,
    cached=True,
    windowed=False,
    needs=("longest",),
    longest_name=lambda model: model.positions - 1,  # a name's '.' and its characters fill the positions
)
