"""Named configurations: the lecture's performance log, row by row, and the tested presets of
`wavenet-names train --preset`. Each is a set of options by name, as `train`'s flags name them,
with the model kind's own recipe under them."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    options: dict  # by name, as `train`'s flags: {"model": "flat", "n_embd": 10, ...}; the kind's recipe under them
    lecture: tuple[float, float] | None = None  # (train, val) in the lecture's log


LECTURE_PRESETS = [
    Preset(
        "flat-3",
        "flat MLP, 3-character context, 200 hidden",
        dict(model="flat", n_embd=10, n_hidden=200, block_size=3),
        (2.058, 2.105),
    ),
    Preset(
        "flat-8",
        "flat MLP, 8-character context",
        dict(model="flat", n_embd=10, n_hidden=200, block_size=8),
        (1.918, 2.027),
    ),
    Preset(
        "tree-22k-bug",
        "hierarchical, batch-norm over the batch dimension only (the lecture's bug)",
        dict(model="hierarchical", n_embd=10, n_hidden=68, n_layers=3, batchnorm_bug=True),
        (1.941, 2.029),
    ),
    Preset(
        "tree-22k",
        "hierarchical, batch-norm over batch and position (the fix)",
        dict(model="hierarchical", n_embd=10, n_hidden=68, n_layers=3),
        (1.912, 2.022),
    ),
    Preset(
        "tree-76k",
        "hierarchical, n_embd 24, n_hidden 128",
        dict(model="hierarchical", n_embd=24, n_hidden=128, n_layers=3),
        (1.769, 1.993),
    ),
    Preset(
        "conv-76k",
        "the same 76K tree as ConvWaveNet on whole names (the default `train`)",
        dict(model="conv", n_embd=24, n_hidden=128, n_layers=3),
    ),
]
QUICK_FACTOR = 20  # --quick divides every step count by this

# `wavenet-names train --preset NAME`: configurations chosen on the validation split
BEST = dict(
    model="conv",
    n_embd=32,
    n_hidden=384,
    n_layers=4,
    dropout=0.2,
    steps=4000,
    batch_size=256,
    eval_every=500,
    report_test=True,
)
TRAIN_PRESETS = {
    "best": Preset(
        "best",
        "ConvWaveNet with a 16-character context (4 levels), n_embd 32, n_hidden 384, dropout 0.2; "
        "4,000 AdamW steps of 256 names (about 7 minutes on 2 CPU cores); reports the test loss",
        BEST,
    ),
    "max": Preset(
        "max",
        "6 ConvWaveNets like best's but narrower and with less dropout (n_hidden 256, dropout 0.1), each "
        "4,000 AdamW steps of 256 names from its own seed, 2 at a time, averaged as one ensemble (about 20 "
        "minutes on 2 CPU cores); reports the test loss",
        # alone, each is worse than best's model; but they differ more, so their average gains more
        {**BEST, "n_hidden": 256, "dropout": 0.1, "members": 6, "members_at_once": 2},
    ),
}
PRESET_HELP = "; ".join(f"{name}: {preset.description}" for name, preset in TRAIN_PRESETS.items())
