"""`wavenet-names-onnx DIR`: names from a directory that `wavenet-names export` wrote, where PyTorch is
not installed. It takes `wavenet-names sample`'s options and prints what `sample --onnx DIR` prints,
through the same request and the same printing (draws.py, printing.py), with numpy and onnxruntime
alone (portable.py): nothing it imports imports torch.

Bad input ends in one line on stderr and exit status 2; too few names under the constraints, in the
names found and exit status 1.
"""

import os
import sys

from .choosing import SampleConfig
from .constraints import Constraints
from .flags import Exclusion, Labelling, Parser, add_options
from .options import OptionError, flag, option_fields
from .printing import print_sampled, said
from .words import DataError

PROG = "wavenet-names-onnx"


def load_export(directory: str):
    """portable.OnnxModel.load(directory), or one line that says to install onnxruntime, an optional
    dependency, where it is missing (here and in wavenet-names --onnx)."""
    try:
        from .portable import OnnxModel
    except ImportError as e:
        raise ValueError(f"an exported model needs onnxruntime ({e}): pip install 'wavenet_names[onnx]'") from None
    return OnnxModel.load(directory)


def build_parser() -> Parser:
    parser = Parser(
        prog=PROG,
        description="Names from an exported model (wavenet-names export), with numpy and onnxruntime alone: "
        "the options and the names of wavenet-names sample, without PyTorch.",
    )
    parser.add_argument("directory", metavar="DIR", help="the directory that wavenet-names export --out wrote")
    for cls in (Labelling, SampleConfig):
        add_options(parser, cls)
    group = parser.add_argument_group(
        "constraints", "names that break one are drawn again: those kept follow the model's distribution given them"
    )
    add_options(group, Constraints)
    add_options(group, Exclusion)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return print_sampled(load_export(args.directory), args, PROG)
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `wavenet-names-onnx DIR -n 100000 | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (DataError, ValueError, OSError) as e:
        flags = {f.name: flag(f) for cls in (SampleConfig, Constraints) for f in option_fields(cls)}
        print(f"{PROG}: error: {e.spelled(flags) if isinstance(e, OptionError) else said(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
