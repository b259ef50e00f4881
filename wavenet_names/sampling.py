"""Sampling new names from any model: one character at a time from its state (ConvWaveNet's cache,
the Transformer's keys and values, the GRU's state), or by recomputing a window otherwise."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .data import Vocab
from .ensemble import Ensemble
from .models import kind_of
from .options import OptionError, check_at_least, option


@dataclass(frozen=True)
class SampleConfig:
    n: int = option(20, "how many names", flag="-n")
    temperature: float = option(1.0, "above 1 more adventurous, below 1 safer")
    top_k: int | None = option(None, "sample only among the k most likely characters (more than the vocabulary: all)")
    top_p: float | None = option(
        None,
        "nucleus sampling: only among the most likely characters whose probabilities add up to at least p, in (0, 1]",
        show_default=False,
    )
    prefix: str = option("", "start every name with these characters", show_default=False)
    seed: int | None = option(None, "the same seed prints the same names")
    cut_at: int = option(
        64,
        "a safety limit: stop drawing a name at this many characters, the prefix's included, and mark it as "
        "cut (default: 64, or the training data's longest item if longer; --max-len keeps only shorter names)",
        show_default=False,
    )
    batch_size: int = 1024  # names generated at once: memory stays bounded however many are asked for

    def __post_init__(self):
        check_at_least(self, 1, "n", "batch_size", "top_k", "cut_at")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise OptionError("top_p", f"must be in (0, 1], got {self.top_p}")
        if not self.temperature > 0:
            raise OptionError("temperature", f"must be greater than 0, got {self.temperature}")
        if len(self.prefix) > self.cut_at:
            raise OptionError(
                "prefix", f"has {len(self.prefix)} characters, past the {self.cut_at} where a name is cut"
            )


class Sampled(NamedTuple):
    """A sampled name, and whether it ended (the model chose the end token) or was cut at cut_at."""

    name: str
    ended: bool


MARKS = "* = in the training split, + = in val or test, unmarked = new"


def default_cut_at(train_words) -> int:
    """The sample command's --cut-at: 64 characters, or the longest item the model was trained on if
    that is longer (a product list's titles), so that no sample is cut shorter than the data it imitates."""
    return max([SampleConfig.cut_at, *map(len, train_words)])


def generate(
    model, vocab: Vocab, config: SampleConfig, use_cache: bool = True, labels: torch.Tensor | None = None
) -> list[str]:
    """config.n names, each config.prefix followed by sampled characters up to the end token.

    With use_cache and a model that has one (ConvWaveNet), each character costs one node per layer;
    otherwise the whole window is recomputed for every character (a model of whole names, whose
    context is unbounded, always generates from its cache). The same seed gives the same names.
    labels (K,): a conditional model's labels for every name, 0 for one left unknown (LabelColumns.parse).
    """
    return list(stream(model, vocab, config, use_cache, labels))


def stream(
    model, vocab: Vocab, config: SampleConfig, use_cache: bool = True, labels: torch.Tensor | None = None
) -> Iterator[str]:
    """generate()'s names, config.batch_size at a time: a caller can print the first ones while the
    rest are made, and a million names need no more memory than a batch of them (a cache holds
    every layer's last `dilation` inputs for each name)."""
    return (sampled.name for sampled in stream_sampled(model, vocab, config, use_cache, labels))


def stream_sampled(
    model, vocab: Vocab, config: SampleConfig, use_cache: bool = True, labels: torch.Tensor | None = None
) -> Iterator[Sampled]:
    """stream()'s names, each with whether it ended or was cut at config.cut_at."""
    with sampler(model, vocab, config, use_cache, labels) as draw:
        for start in range(0, config.n, config.batch_size):
            yield from draw(min(config.batch_size, config.n - start))


@contextmanager
def sampler(
    model, vocab: Vocab, config: SampleConfig, use_cache: bool = True, labels: torch.Tensor | None = None
) -> Iterator[Callable[[int], list[Sampled]]]:
    """draw(n), which samples n more names at once (config.n aside), from one random stream: the same
    seed gives the same names for the same sizes of draws. The model is in eval mode inside."""
    prefix = vocab.encode(config.prefix)
    generator = torch.Generator().manual_seed(config.seed) if config.seed is not None else None

    def draw(n: int) -> list[Sampled]:
        batch_labels = None if labels is None else labels.expand(n, -1)  # (n, K)
        return _batch(model, vocab, config, prefix, n, generator, use_cache, batch_labels)

    was_training = model.training
    model.eval()  # BatchNorm's running statistics: a name must not depend on those sampled beside it
    try:  # and afterwards the mode it was in: a training loop may sample to see how it is going
        yield draw
    finally:
        model.train(was_training)


@torch.no_grad()
def _batch(
    model,
    vocab: Vocab,
    config: SampleConfig,
    prefix: list[int],
    n: int,
    generator,
    use_cache: bool,
    labels: torch.Tensor | None,
):
    """n names at once, one character of each per step, until every one has ended or is cut_at
    characters long, the prefix's included. One more draw tells whether a name that long ends there."""
    device = next(model.parameters()).device
    labels = None if labels is None else labels.to(device)  # (n, K)
    room = min(config.cut_at, longest_name(model) or config.cut_at) - len(prefix)  # what a name may add
    if room < 0:
        raise ValueError(f"the prefix has {len(prefix)} characters; this model reads names of {longest_name(model)}")
    next_logits = _incremental(model, n, labels) if _cached(model, use_cache) else _windows(model, n, labels)
    for ix in [0] + prefix:  # the '.' before the name, then the prefix
        logits = next_logits(torch.full((n,), ix, dtype=torch.long))
    characters = []  # (n,) a step: each name's next character, 0 once it has ended
    done = torch.zeros(n, dtype=torch.bool)
    for drawn in range(room + 1):
        ix = _sample(logits, config, generator)  # (n,)
        done |= ix == 0
        if done.all() or drawn == room:
            break
        characters.append(ix.masked_fill(done, 0))
        logits = next_logits(ix)
    rows = torch.stack(characters, dim=1).tolist() if characters else [[] for _ in range(n)]  # (n, steps)
    return [
        Sampled(config.prefix + vocab.decode(c for c in row if c), ended)
        for row, ended in zip(rows, done.tolist(), strict=True)
    ]


def _sample(logits: torch.Tensor, config: SampleConfig, generator) -> torch.Tensor:
    logits = logits.float().cpu() / config.temperature  # (n, vocab)
    if config.top_k is not None and config.top_k < logits.shape[-1]:
        kth = torch.topk(logits, config.top_k).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    if config.top_p is not None and config.top_p < 1:  # (1: every character)
        probs = nucleus(probs, config.top_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """probs (n, vocab) cut to each row's nucleus (Holtzman et al. 2019, arXiv:1904.09751): its most
    likely characters, the fewest whose probabilities add up to at least top_p, and the rest zero.
    The most likely is always kept. multinomial renormalises what is left."""
    sorted_probs, order = probs.sort(dim=-1, descending=True, stable=True)
    before = sorted_probs.cumsum(dim=-1) - sorted_probs  # (n, vocab): the mass of the more likely ones
    keep = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, order, before < top_p)
    return probs * keep


def longest_name(model) -> int | None:
    """The most characters a name sampled from `model` can have, or None for no limit (of an
    ensemble, the fewest of its members')."""
    members = model.members if isinstance(model, Ensemble) else [model]
    limits = [limit for limit in map(kind_of(model).longest_name, members) if limit is not None]
    return min(limits, default=None)


def _cached(model, use_cache: bool) -> bool:
    """Whether to generate from the model's state, or by recomputing a window of its last block_size
    characters: only a model whose prediction depends on no more than those (Kind.windowed) can."""
    kind = kind_of(model)
    if kind.cached and (use_cache or not kind.windowed):
        return True
    if not kind.windowed:
        raise ValueError(f"a {kind.name} model reads the whole name and has no state to generate from")
    return False


def _incremental(model, n: int, labels: torch.Tensor | None):
    device = next(model.parameters()).device
    state = model.init_state(n, labels)

    def next_logits(token):
        nonlocal state
        logits, state = model.step(token.to(device), state)
        return logits

    return next_logits


def _windows(model, n: int, labels: torch.Tensor | None):
    """Recompute the model on the last block_size characters, for every new character."""
    device = next(model.parameters()).device
    context = torch.zeros(n, model.block_size - 1, dtype=torch.long, device=device)

    def next_logits(token):
        nonlocal context
        window = torch.cat([context, token.to(device)[:, None]], dim=1)  # (n, block_size)
        context = window[:, 1:]
        return model.forward_full(window, labels)[:, -1]  # (n, vocab)

    return next_logits
