"""Options: the fields of the config dataclasses that a user sets, each declared once.

A field declared with option() carries its help text, and everything else follows from that one
declaration: the command line's flag (arguments.py builds the parsers from the fields), whether
--resume may change it, and the name a sweep file, a preset or the server's API gives it (the
field's). Errors about an option name the field, as a library's arguments are named (n_layers);
the command line shows them as flags (--n-layers).
"""

from collections.abc import Callable
from dataclasses import MISSING, Field, field, fields


def option(
    default,
    help: str,
    *,
    flag: str | None = None,
    choices=None,
    resumable: bool = False,
    negatable: bool = False,
    show_default: bool = True,
    metavar: str | None = None,
    parse: Callable[[str], object] | None = None,
    repeatable: bool = False,
    positional: bool = False,
):
    """A dataclass field that is also a user's option.

    flag: the command line's spelling, if not --name-with-dashes; choices: the values it takes;
    resumable: --resume may change it (the rest are the saved run's); negatable: a bool flag that
    also has --no-...; show_default: add "(default ...)" to the help; metavar: the value's name in
    --help; parse: how a flag's text becomes the value (default: the field's type); repeatable: the
    flag may be given again and again, each adding one (a tuple); positional: an argument, not a flag.
    """
    metadata = dict(
        help=help,
        flag=flag,
        choices=choices,
        resumable=resumable,
        negatable=negatable,
        show_default=show_default,
        metavar=metavar,
        parse=parse,
        repeatable=repeatable,
        positional=positional,
    )
    if isinstance(default, (list, dict, set)):
        raise TypeError("an option's default is immutable: a tuple, not a list")
    return field(default=default, metadata=metadata)


def option_fields(cls) -> list[Field]:
    """The fields of a config dataclass that are options, in their declared order."""
    return [f for f in fields(cls) if "help" in f.metadata]


def flag(f: Field) -> str:
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


def default(f: Field):
    return None if f.default is MISSING else f.default


class OptionError(ValueError):
    """A bad value of one or more options, named by their fields (as library arguments).

    str(e) reads "n_layers must be at least 1, got 0"; e.spelled(flags) gives the command line's
    "--n-layers must be at least 1, got 0", with flags a mapping from field names to flags. A problem
    may name other options too: each {} in it is one of `mentions`, spelled the same way.
    """

    def __init__(self, names: str | tuple[str, ...], problem: str, mentions: tuple[str, ...] = ()):
        self.names = (names,) if isinstance(names, str) else tuple(names)
        self.problem, self.mentions = problem, tuple(mentions)
        super().__init__(self.spelled({}))

    def __reduce__(self):  # raised in another process: the same error here
        return OptionError, (self.names, self.problem, self.mentions)

    def spelled(self, flags: dict[str, str]) -> str:
        listed = listing([flags.get(name, name) for name in self.names])
        return f"{listed} {self.problem.format(*(flags.get(name, name) for name in self.mentions))}"


def listing(words: list[str]) -> str:
    """ "a", "a and b", "a, b and c"."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def check_at_least(config, minimum: int, *names: str) -> None:
    """Raise OptionError for the first of the fields `names` of `config` below `minimum`."""
    for name in names:
        value = getattr(config, name)
        if value is not None and value < minimum:
            raise OptionError(name, f"must be at least {minimum}, got {value}")


def check_fraction(config, *names: str) -> None:
    """Raise OptionError for the first of the fields `names` of `config` outside [0, 1): a probability
    of dropping something, which must leave something."""
    for name in names:
        value = getattr(config, name)
        if not 0.0 <= value < 1.0:
            raise OptionError(name, f"must be in [0, 1), got {value}")


def check_choices(config) -> None:
    """Raise OptionError for the first option of `config` whose value is not one of its choices."""
    for f in option_fields(type(config)):
        value, choices = getattr(config, f.name), f.metadata["choices"]
        if choices is not None and value not in choices:
            raise OptionError(f.name, f"must be one of {', '.join(map(str, choices))}, got {value!r}")


def options_of(cls, owner: str, values: dict):
    """An instance of the options dataclass `cls` with `values` (by field name) over its defaults; a
    name it has no field for is refused in one line that names what `owner` takes."""
    own = [f.name for f in option_fields(cls)]
    unknown = [name for name in values if name not in own]
    if unknown:
        takes = f"takes {listing(['{}'] * len(own))}" if own else "takes no options"
        raise OptionError(unknown[0], f"is not an option of {owner}, which {takes}", mentions=tuple(own))
    return cls(**values)
