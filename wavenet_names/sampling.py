"""Sampling new names from any model: one character at a time from its state (ConvWaveNet's cache,
the Transformer's keys and values, the GRU's state), or by recomputing a window otherwise. Each
character is chosen from the logits as choosing.py says, which the exported models' sampler shares."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch

from .choosing import SampleConfig, Sampled, draw_names, random_numbers
from .ensemble import Ensemble
from .models import kind_of
from .words import Vocab


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
    vocab.encode(config.prefix)  # a character it does not know: now, before any drawing
    # no seed: one from torch's own generator, so that torch.manual_seed fixes the names as it fixes the rest
    seed = config.seed if config.seed is not None else int(torch.randint(2**62, ()))
    numbers = random_numbers(seed)

    labels = None if labels is None else torch.as_tensor(labels)  # (K,): LabelColumns.parse's numpy, too

    def draw(n: int) -> list[Sampled]:
        batch_labels = None if labels is None else labels.expand(n, -1)  # (n, K)
        return _batch(model, vocab, config, n, numbers, use_cache, batch_labels)

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
    n: int,
    numbers: np.random.Generator,
    use_cache: bool,
    labels: torch.Tensor | None,
):
    """n names at once (choosing.draw_names), from the model's state or by recomputing its window."""
    device = next(model.parameters()).device
    labels = None if labels is None else labels.to(device)  # (n, K)
    prefix = len(config.prefix)
    room = min(config.cut_at, longest_name(model) or config.cut_at) - prefix  # what a name may add
    if room < 0:
        raise ValueError(f"the prefix has {prefix} characters; this model reads names of {longest_name(model)}")
    next_logits = _incremental(model, n, labels) if _cached(model, use_cache) else _windows(model, n, labels)

    def next_numpy(tokens: np.ndarray) -> np.ndarray:  # what draw_names() feeds and reads
        return next_logits(torch.from_numpy(tokens)).double().cpu().numpy()

    return draw_names(next_numpy, n, vocab, room, config, numbers)


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
