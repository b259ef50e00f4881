"""Names data for PyTorch: the shipped data files, the lecture's split, and the two views
of the same examples that the two families of model consume (batches.py draws them).

Every name "emma" yields len+1 examples, one per character to predict, the end token included:

    ........ -> e     .......e -> m     ......em -> m     .....emm -> a     ....emma -> .

The per-position models (FlatMLP, HierarchicalMLP) see these as `windows`: X (N, block_size), Y (N,).
The convolutional model sees whole names: `pad_batch` lays each name after block_size '.' tokens and
right-pads the batch, with -1 targets at padding, so one forward pass trains every position of a name.
"""

import random

import torch

from .words import Vocab, shipped

NAMES_TXT = shipped("names.txt")  # the default data: 32,469 US baby names of 2017 (data/build_names.py)
NAMES_BY_DECADE = shipped("names-by-decade.tsv")  # names with their sex and decade, 1880 to 2017 (labels.py)


def split_words(words: list[str], seed: int = 42) -> tuple[list[str], list[str], list[str]]:
    """The lecture's split: random.seed(42); random.shuffle(words); then 80% / 10% / 10%.

    A private Random(seed) shuffles exactly as the seeded global one does, without touching global state.
    """
    words = list(words)
    random.Random(seed).shuffle(words)
    n1, n2 = int(0.8 * len(words)), int(0.9 * len(words))
    return words[:n1], words[n1:n2], words[n2:]


def windows(words: list[str], vocab: Vocab, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The lecture's build_dataset: X (N, block_size) contexts, Y (N,) next characters."""
    xs, ys = [], []
    for w in words:
        context = [0] * block_size
        for ix in vocab.encode(w) + [0]:
            xs.append(context)
            ys.append(ix)
            context = context[1:] + [ix]
    return torch.tensor(xs, dtype=torch.long), torch.tensor(ys, dtype=torch.long)


def encode_names(words: list[str], vocab: Vocab) -> tuple[torch.Tensor, torch.Tensor]:
    """All names as one right-padded matrix, for a batch you lay out yourself (see pad_batch).

    Returns tokens (N, max_len) with 0 after each name, and lengths (N,).
    """
    chars, starts, lengths = names_end_to_end(words, vocab)
    return names_right_padded(chars, starts, lengths, int(lengths.max()) if len(lengths) else 0), lengths


def names_end_to_end(words: list[str], vocab: Vocab) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every name's characters end to end, chars (C,), with where each name starts in them and its
    length, starts and lengths (N,): memory in proportion to the characters. A right-padded
    (N, max_len) matrix would make one long item cost N times its length. (Not ConvWaveNet's packed
    rows, which are a batch's layout: see packing.py.)"""
    encoded = [vocab.encode(w) for w in words]
    lengths = torch.tensor([len(e) for e in encoded], dtype=torch.long)
    chars = torch.tensor([c for e in encoded for c in e], dtype=torch.long)
    return chars, lengths.cumsum(0) - lengths, lengths


def names_right_padded(chars: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor, longest: int) -> torch.Tensor:
    """The names that start at starts (B,) in chars (C,), of lengths (B,), as a (B, longest) matrix
    right-padded with 0, on chars' device. longest >= max(lengths), given so no device is read."""
    columns = torch.arange(longest, device=chars.device)
    inside = columns < lengths[:, None]  # (B, longest)
    at = (starts[:, None] + columns).masked_fill(~inside, 0)  # past its name, a row reads any valid entry...
    return chars[at].masked_fill(~inside, 0)  # ...then pads with 0


def pad_batch(
    tokens: torch.Tensor, lengths: torch.Tensor, block_size: int, longest: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole names in the conv model's layout.

    tokens (B, L) right-padded names, lengths (B,); longest: max(lengths) when the caller knows it
    without reading it from a GPU, or more, for a wider layout. Returns
      idx     (B, block_size + n - 1): block_size '.' tokens, then the name, then padding '.',
      targets (B, n): the name, then the end token 0, then -1 at padding,
    where n = longest + 1 is the number of predictions of the longest name. Output j of the model
    sees idx[:, j : j + block_size] and predicts targets[:, j].
    """
    B = tokens.shape[0]
    n = (int(lengths.max()) if longest is None else longest) + 1
    names = torch.zeros(B, n, dtype=torch.long, device=tokens.device)
    names[:, : min(n, tokens.shape[1])] = tokens[:, :n]
    positions = torch.arange(n, device=tokens.device)
    targets = names.masked_fill(positions > lengths[:, None], -1)  # (B, n): name, end token 0, -1s
    idx = torch.cat([names.new_zeros(B, block_size), names[:, : n - 1]], dim=1)  # (B, block_size + n - 1)
    return idx, targets
