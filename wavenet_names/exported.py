"""An exported model's directory, as export.py writes it and portable.py reads it: two ONNX graphs,
each carrying the facts a reader needs as JSON under one metadata key, and the names the model was
trained on, for marking samples. Nothing here imports torch.

    step.onnx   one character of every name, from the state its earlier characters left (Fast
                WaveNet generation, arXiv:1611.09482): what sampling runs
        in      token   (B,) int64               each name's last character (0: the '.' token)
                labels  (B, K) int64             each name's label numbers, 0 unknown (only with labels)
                queue0 ... queue{L-1}            layer i's last `dilation_i` inputs, oldest first,
                        (B, dilation_i, width_i) float32; all zeros before the first character
        out     logits  (B, V) float32           the next character's
                queue0_out ... queue{L-1}_out    the queues after this character: the next step's in
    full.onnx   every position of whole names at once: what scoring runs
        in      idx     (B, T) int64             block_size '.' tokens (0), then each name, right-padded
                labels  (B, K) int64             (only with labels)
        out     logits  (B, T - block_size + 1, V)   output j predicts the character after
                                                      idx[:, j : j + block_size]
    seen.json.gz   {"train": [...], "held_out": [...]}: the items of each split, for the marks * and +
                   and for --new; absent for a model of a list too large to keep them

To sample from the step graph: start every queue at zeros and feed '.' block_size times; the last
logits are the first character's. Then feed each character drawn, until the model draws '.'.
"""

import json
from dataclasses import asdict, dataclass, field

FORMAT = 1  # the inputs, outputs and facts above: a reader refuses a directory of another format
STEP, FULL, SEEN = "step.onnx", "full.onnx", "seen.json.gz"
KEY = "wavenet_names"  # the metadata key whose value is ExportedFacts as JSON


@dataclass(frozen=True)
class ExportedFacts:
    """What a reader of the graphs needs to know, embedded in each."""

    format: int
    version: str  # the wavenet_names that wrote it
    graph: str  # "step" or "full"
    kind: str  # the model's kind (--model)
    chars: tuple[str, ...]  # the vocabulary: chars[i] is token i, chars[0] the '.' start and end token
    block_size: int  # the '.' tokens before a name: its context
    queues: tuple[tuple[int, int], ...]  # the step graph's state: per layer (dilation, width)
    cut_at: int  # where a sample is cut by default: 64, or the longest item it trained on
    labels: dict | None = None  # {"names": [...], "values": [[...], ...]}: each column's values, numbered from 1
    val: float | None = None  # its val loss, as recorded when it was trained
    model: str = ""  # what was exported: a checkpoint, or a shipped model's name
    recipe: dict = field(default_factory=dict)  # its model_config and train_config, as its checkpoint holds them
    dataset: str | None = None  # a shipped model's data file, by name: found wherever the package is installed
    data_fingerprint: str | None = None  # of the data it trained on: `evaluate` refuses another file's split

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str, source: str) -> "ExportedFacts":
        """The facts of a graph's metadata; ValueError, naming `source`, for facts of another format."""
        saved = json.loads(text)
        if saved.get("format") != FORMAT:
            raise ValueError(
                f"{source}: written by wavenet_names {saved.get('version', '(unknown)')} in export format "
                f"{saved.get('format')}, and this version reads format {FORMAT}: export it again"
            )
        saved["chars"] = tuple(saved["chars"])
        saved["queues"] = tuple(map(tuple, saved["queues"]))
        return cls(**saved)
