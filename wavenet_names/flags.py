"""The command line's flags, made from the option fields of the config dataclasses (options.option), with
no PyTorch: `wavenet-names` builds its parsers with them (arguments.py, cli.py), and so does the
command of exported models, `wavenet-names-onnx` (onnx_cli.py), which runs where torch is not installed.

Every flag defaults to None, so that an option not given is told from one given its default value:
given() returns the options given, by name, and the library's dataclasses supply the rest.
"""

import argparse
import typing
from dataclasses import dataclass

from .options import default, flag, option, option_fields


class Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def add_options(parser, cls) -> None:
    """A flag (or an argument) for each option field of the config dataclass `cls`."""
    for f in option_fields(cls):
        add_flag(parser, f, help_of(f, default(f)))


def add_flag(parser, f, help: str) -> None:
    """The flag of option field `f`: a switch for a bool, repeatable, or of its type (or its parse)."""
    meta = f.metadata
    spec = {"default": None, "help": help}
    if f.type is bool:
        spec["action"] = argparse.BooleanOptionalAction if meta["negatable"] else "store_true"
    elif meta["repeatable"]:
        spec["metavar"] = meta["metavar"]
        spec["action"] = "append"
    else:
        types = (int, float, str)
        spec["type"] = meta["parse"] or next(t for t in types if t is f.type or t in typing.get_args(f.type))
        spec["choices"], spec["metavar"] = meta["choices"], meta["metavar"]
    if meta["positional"]:
        parser.add_argument(f.name, nargs="?", **spec)
    else:
        parser.add_argument(flag(f), dest=f.name, **spec)


def help_of(f, value, by_kind: str = "") -> str:
    """An option's help, with its default (`value`, or what differs by kind, `by_kind`)."""
    text = f.metadata["help"]
    if not f.metadata["show_default"] or f.type is bool or (value is None and not by_kind):
        return text
    return f"{text} (default {by_kind or value})"


def given(args, *classes) -> dict:
    """The options of these dataclasses given on the command line, by name (a repeatable one as a tuple)."""
    names = [f.name for cls in classes for f in option_fields(cls)]
    values = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    return {name: tuple(value) if isinstance(value, list) else value for name, value in values.items()}


# --- the options of a request for names that only a command line takes -------------------------------


@dataclass(frozen=True)
class Labelling:
    label: tuple[str, ...] = option(
        (),
        "a conditional model's label for every name, e.g. --label sex=F --label decade=1920; a label not "
        "given is unknown",
        metavar="COLUMN=VALUE",
        repeatable=True,
        show_default=False,
    )


@dataclass(frozen=True)
class Exclusion:
    exclude: str | None = option(
        None, "a file of names to leave out, one per line, whatever their case", metavar="FILE"
    )
