"""How the next character is chosen from a model's logits, with no PyTorch: the sampling settings
(SampleConfig), temperature, top-k and top-p, and the draw itself. PyTorch's sampler (sampling.py) and
the exported models' (portable.py) both choose here, from the same random numbers, so that the same
seed gives the same names from either runtime.

The draw is inverse-CDF sampling: one uniform number u per name and step, and the first character
whose cumulative probability passes u times the total. Unlike torch.multinomial, whose draws only
PyTorch's generator can reproduce, this needs only the uniform numbers, which numpy's PCG64 gives alike
on every platform. The arithmetic runs in float64: two runtimes whose logits agree within 1e-5 then
choose differently only when u falls within about that much of a boundary between two characters.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .options import OptionError, check_at_least, option
from .words import Vocab


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


def random_numbers(seed: int | None) -> np.random.Generator:
    """The stream that choose() draws from: numpy's PCG64, the same numbers for the same seed on every
    platform and in either runtime; None: a fresh seed from the operating system."""
    return np.random.Generator(np.random.PCG64(seed))


def draw_names(
    next_logits: Callable[[np.ndarray], np.ndarray],
    n: int,
    vocab: Vocab,
    room: int,
    config: SampleConfig,
    numbers: np.random.Generator,
) -> list[Sampled]:
    """n names at once, each config.prefix and one character per step after it, until every one has
    ended or has added `room` characters (cut). One more draw tells whether a name that long ends there.
    next_logits(tokens (n,) int64) feeds a model one character per name and returns the logits (n, vocab)
    for the next; the '.' before every name goes first, then the prefix's characters."""
    for ix in [0] + vocab.encode(config.prefix):
        logits = next_logits(np.full(n, ix, dtype=np.int64))
    characters = []  # (n,) a step: each name's next character, 0 once it has ended
    done = np.zeros(n, dtype=bool)
    for drawn in range(room + 1):
        ix = choose(logits, config, numbers)  # (n,)
        done |= ix == 0
        if done.all() or drawn == room:
            break
        characters.append(np.where(done, 0, ix))
        logits = next_logits(ix)
    rows = np.stack(characters, axis=1).tolist() if characters else [[] for _ in range(n)]  # (n, steps)
    return [
        Sampled(config.prefix + vocab.decode(c for c in row if c), ended)
        for row, ended in zip(rows, done.tolist(), strict=True)
    ]


def choose(logits: np.ndarray, config: SampleConfig, numbers: np.random.Generator) -> np.ndarray:
    """Each row's next character, (n,) int64, from logits (n, vocab): at config.temperature, among
    config.top_k and config.top_p's characters, with one uniform number per row from `numbers`."""
    logits = logits.astype(np.float64) / config.temperature
    if config.top_k is not None and config.top_k < logits.shape[-1]:
        kth = -np.partition(-logits, config.top_k - 1, axis=-1)[:, config.top_k - 1 : config.top_k]  # (n, 1)
        logits = np.where(logits < kth, -np.inf, logits)
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))  # softmax, short of dividing by the sum
    if config.top_p is not None and config.top_p < 1:  # (1: every character)
        probs = nucleus(probs / probs.sum(axis=-1, keepdims=True), config.top_p)
    cumulative = np.cumsum(probs, axis=-1)  # (n, vocab)
    u = numbers.random(len(probs)) * cumulative[:, -1]  # (n,): a point in each row's total mass
    chosen = (cumulative <= u[:, None]).sum(axis=-1)  # the first character whose cumulative mass passes u
    return np.minimum(chosen, probs.shape[-1] - 1)  # (u is below the total; rounding cannot step past it)


def nucleus(probs: np.ndarray, top_p: float) -> np.ndarray:
    """probs (n, vocab) cut to each row's nucleus (Holtzman et al. 2019, arXiv:1904.09751): its most
    likely characters, the fewest whose probabilities add up to at least top_p, and the rest zero.
    The most likely is always kept; a tie is broken towards the earlier character. The draw
    renormalises what is left."""
    order = np.argsort(-probs, axis=-1, kind="stable")  # (n, vocab): most likely first
    sorted_probs = np.take_along_axis(probs, order, axis=-1)
    before = np.cumsum(sorted_probs, axis=-1) - sorted_probs  # the mass of the more likely ones
    keep = np.zeros(probs.shape, dtype=bool)
    np.put_along_axis(keep, order, before < top_p, axis=-1)
    return probs * keep
