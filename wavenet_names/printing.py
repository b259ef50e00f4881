"""What a command of names prints, with no PyTorch: the names of a request, each with its mark or why it
was cut, and an error's one line. `wavenet-names sample` prints so (cli.py), and so does
`wavenet-names-onnx` (onnx_cli.py), which runs where torch is not installed."""

import sys
from collections.abc import Callable, Iterable

from .choosing import MARKS, SampleConfig, Sampled
from .constraints import Constraints, TooRare
from .draws import NameRequest, draw
from .flags import Exclusion, Labelling, given
from .words import read_words


def print_sampled(loaded, args, command: str) -> int:
    """The names that `sample`'s flags in `args` ask of `loaded` (a LoadedModel or an OnnxModel),
    printed as they come; returns the exit status: 1 if fewer met the constraints than were asked for
    (the names found are printed, and stderr says why there are not more), else 0."""
    exclude = Exclusion(**given(args, Exclusion)).exclude
    labels = given(args, Labelling).get("label", ())
    try:
        exclude = read_words(exclude) if exclude else ()
        print_drawn(loaded, given(args, SampleConfig, Constraints), labels, exclude, command=command)
    except TooRare as e:
        print(f"{command}: {e}", file=sys.stderr)
        return 1
    return 0


def print_drawn(
    loaded, options: dict, labels=(), exclude=(), heading: bool = False, command: str = "wavenet-names sample"
) -> None:
    """The names of a NameRequest of these options, printed a batch at a time while the rest are made."""
    request = NameRequest.of(loaded, options, labels, exclude)
    if loaded.seen.missing:  # a large list's model, whose data file is not what it was
        print(f"{command}: {loaded.seen.missing}", file=sys.stderr)
    print_names(draw(loaded, request), loaded.mark, request.sampling.cut_at, heading)


def print_names(names: Iterable[Sampled], mark: Callable[[Sampled], str], cut_at: int, heading: bool = False) -> None:
    """Each name as it comes, with its mark ("*", "+", "": LoadedModel.mark), or why it stopped before
    the model ended it: --cut-at, or the most the model can read. heading: what the marks mean, first."""
    if heading:
        print(f"samples ({MARKS}):")
    for sampled in names:
        printed, marked = sampled.name or "(empty)", mark(sampled)
        if marked == "cut":
            why = f"--cut-at {cut_at}" if len(sampled.name) == cut_at else f"the model's longest, {len(sampled.name)}"
            print(f"{printed}  (cut at {why})")
        else:
            print(f"{printed} {marked}" if marked else printed)


def said(e: Exception) -> str:
    """An error's one line: an OSError as its file and the system's words, not "[Errno 2] ..."."""
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}"
    return str(e)
