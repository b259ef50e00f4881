"""Options: the fields of the config dataclasses that a user sets, each declared once.

A field declared with option() carries its help text, and everything else follows from that one
declaration: the command line's flag (cli.py builds its parsers from the fields), whether --resume
may change it, and the name a sweep file or a preset gives it. Errors about an option name the
field, as a library's arguments are named (n_layers); the command line shows them as flags
(--n-layers).
"""

from dataclasses import MISSING, Field, field, fields


def option(
    default,
    help: str,
    *,
    name: str | None = None,
    flag: str | None = None,
    choices=None,
    resumable: bool = False,
    negatable: bool = False,
    show_default: bool = True,
):
    """A dataclass field that is also a user's option.

    name: what presets, sweep files and flags call it, if not the field's own name (ModelConfig.kind
    is the option "model"); flag: the command line's spelling, if not --name-with-dashes; choices:
    the values it takes; resumable: --resume may change it (the rest are the saved run's); negatable:
    a bool flag that also has --no-...; show_default: add "(default ...)" to the help.
    """
    metadata = dict(
        help=help,
        name=name,
        flag=flag,
        choices=choices,
        resumable=resumable,
        negatable=negatable,
        show_default=show_default,
    )
    return field(default=default, metadata=metadata)


def option_fields(cls) -> list[Field]:
    """The fields of a config dataclass that are options, in their declared order."""
    return [f for f in fields(cls) if "help" in f.metadata]


def option_name(f: Field) -> str:
    return f.metadata["name"] or f.name


def flag(f: Field) -> str:
    return f.metadata["flag"] or "--" + option_name(f).replace("_", "-")


def default(f: Field):
    return None if f.default is MISSING else f.default


class OptionError(ValueError):
    """A bad value of one or more options, named by their fields (as library arguments).

    str(e) reads "n_layers must be at least 1, got 0"; e.shown(flags) gives the command line's
    "--n-layers must be at least 1, got 0", with flags a mapping from field names to flags.
    """

    def __init__(self, names: str | tuple[str, ...], problem: str):
        self.names = (names,) if isinstance(names, str) else tuple(names)
        self.problem = problem
        super().__init__(self.shown({}))

    def __reduce__(self):  # raised in another process: the same error here
        return OptionError, (self.names, self.problem)

    def shown(self, flags: dict[str, str]) -> str:
        shown = [flags.get(name, name) for name in self.names]
        listed = shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} and {shown[-1]}"
        return f"{listed} {self.problem}"


def check_at_least(config, minimum: int, *names: str) -> None:
    """Raise OptionError for the first of the fields `names` of `config` below `minimum`."""
    for name in names:
        value = getattr(config, name)
        if value is not None and value < minimum:
            raise OptionError(name, f"must be at least {minimum}, got {value}")


def check_choices(config) -> None:
    """Raise OptionError for the first option of `config` whose value is not one of its choices."""
    for f in option_fields(type(config)):
        value, choices = getattr(config, f.name), f.metadata["choices"]
        if choices is not None and value not in choices:
            raise OptionError(f.name, f"must be one of {', '.join(map(str, choices))}, got {value!r}")
