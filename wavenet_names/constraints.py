"""Constraints on sampled names: a length range, an ending, only new names, a list to avoid, no repeats.

A constraint changes which names are kept, never how one is drawn: names are sampled from the model
as they always are, and those that break a constraint are thrown away and drawn again, in batches.
So the names kept follow the model's own distribution given the constraint, exactly. Masking
instead (forbidding the end token until a name is long enough, say) would not: it moves the mass of
the short names onto whichever longer names follow them, not in proportion to their probabilities.
Only --prefix is applied in the drawing itself, by feeding its characters; that too is exact,
since a name's first characters come first.

A rare constraint costs many draws: `tries` bounds them, and TooRare says how many were found. A
search can also be stopped from outside (the server's bound on a request's time, a client gone): it
then says why in place of the advice to allow more tries.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

from .choosing import SampleConfig, Sampled
from .options import OptionError, check_at_least, option
from .words import Seen, Vocab

TRIES_PER_NAME = 1000  # the default bound on draws, per name asked for
SMALLEST_DRAW = 64  # the fewest names drawn at once after the first draw


@dataclass
class Constraints:
    """What a kept name must be. A length counts the prefix's characters."""

    min_len: int | None = option(None, "only names of at least this many characters", show_default=False)
    max_len: int | None = option(
        None,
        "only names of at most this many characters: longer ones are drawn again, not cut short",
        show_default=False,
    )
    ends_with: str = option("", "only names that end with these characters", show_default=False)
    new: bool = option(False, "only names that the data does not hold, in any of its splits")
    exclude: tuple[str, ...] = ()  # names to leave out, whatever their case (sample --exclude FILE: one per line)
    unique: bool = option(False, "no name twice")
    tries: int | None = option(
        None,
        f"give up after drawing this many names in all (default: {TRIES_PER_NAME:,} per name asked for)",
        show_default=False,
    )

    def __post_init__(self):
        self.exclude = tuple(self.exclude)
        check_at_least(self, 1, "min_len", "max_len", "tries")
        if self.min_len is not None and self.max_len is not None and self.min_len > self.max_len:
            raise OptionError(("min_len", "max_len"), f"leave no length: {self.min_len} > {self.max_len}")

    def any(self) -> bool:
        """Whether any constraint is set (other than the bound on tries)."""
        return any(getattr(self, f.name) != f.default for f in fields(self) if f.name != "tries")

    def check(self, config: SampleConfig, vocab: Vocab) -> None:
        """Refuse what no name could meet, before any drawing: an ending of unknown characters, or a
        prefix longer than --max-len."""
        vocab.encode(self.ends_with)  # (an unknown character is its own error)
        if self.max_len is not None and len(config.prefix) > self.max_len:
            raise OptionError("max_len", f"is {self.max_len}, shorter than the prefix {config.prefix!r}")

    def accepts(self, seen: Seen) -> Callable[[Sampled], bool]:
        """The test that a drawn name must pass; with `unique`, it remembers the names it has passed."""
        excluded = frozenset(name.casefold() for name in self.exclude)  # "Emma" in the file leaves out "emma"
        kept: set[str] = set()
        lowest, highest = self.min_len or 0, self.max_len or math.inf

        def accepts(sampled: Sampled) -> bool:
            name = sampled.name
            ok = (
                sampled.ended  # a name cut at --cut-at (or the model's longest) has no length or ending yet
                and lowest <= len(name) <= highest
                and name.endswith(self.ends_with)
                and not (self.new and (name in seen.train or name in seen.held_out))
                and name.casefold() not in excluded
                and not (self.unique and name in kept)
            )
            if ok and self.unique:
                kept.add(name)
            return ok

        return accepts


TRIES_ADVICE = "loosen them, or allow more with --tries"  # the command line's; the server names its field


class TooRare(Exception):
    """Fewer names met the constraints than were asked for, within the bound on tries; `advice` says
    what to do about it."""

    def __init__(self, found: int, wanted: int, tries: int, advice: str = TRIES_ADVICE):
        self.found, self.wanted, self.tries = found, wanted, tries
        super().__init__(f"found {found:,} of {wanted:,} names that meet the constraints in {tries:,} tries; {advice}")


class Search:
    """One request's constrained draws, in batches: how many to draw next, which to keep, and when to
    stop. The first draw is the names asked for, so that constraints every name meets keep the
    names of no constraint; later draws are sized by the share kept so far, for what is missing."""

    def __init__(self, wanted: int, accepts: Callable[[Sampled], bool], tries: int, batch_size: int):
        self.wanted, self.accepts, self.tries, self.batch_size = wanted, accepts, tries, batch_size
        self.found: list[Sampled] = []
        self.drawn = 0
        self.advice = TRIES_ADVICE  # what a shortfall suggests
        self.stopped: str | None = None  # why it was stopped from outside, if it was

    @classmethod
    def of(cls, wanted: int, constraints: Constraints, seen: Seen, batch_size: int) -> "Search":
        return cls(wanted, constraints.accepts(seen), constraints.tries or TRIES_PER_NAME * wanted, batch_size)

    @property
    def done(self) -> bool:
        """Every name found, the bound on tries reached, or stopped."""
        return len(self.found) == self.wanted or self.drawn >= self.tries or self.stopped is not None

    def bound(self, tries: int, advice: str) -> None:
        """Draw at most `tries` names, and suggest `advice` if they are too few."""
        self.tries, self.advice = tries, advice

    def stop(self, why: str) -> None:
        """Draw no more; the shortfall, if any, says why."""
        if not self.done:
            self.stopped = why

    def next_size(self) -> int:
        missing, found = self.wanted - len(self.found), len(self.found)
        size = missing if self.drawn == 0 else max(SMALLEST_DRAW, math.ceil(missing * self.drawn / max(found, 1)))
        return min(size, self.batch_size, self.tries - self.drawn)

    def take(self, drawn: list[Sampled]) -> list[Sampled]:
        """Keep what passes of a draw, up to the names still missing; returns the names kept."""
        self.drawn += len(drawn)
        kept = []
        for sampled in drawn:
            if len(self.found) < self.wanted and self.accepts(sampled):
                self.found.append(sampled)
                kept.append(sampled)
        return kept

    def shortfall(self) -> "TooRare | None":
        if len(self.found) == self.wanted:
            return None
        advice = self.advice if self.stopped is None else f"{self.stopped}; loosen them"
        return TooRare(len(self.found), self.wanted, self.drawn, advice)


def for_constraints(config: SampleConfig, constraints: Constraints) -> SampleConfig:
    """The sampling config that a search draws with: under max_len, a name is cut at max_len + 1
    characters, since it is rejected whatever would follow."""
    if constraints.max_len is None:
        return config
    return replace(config, cut_at=min(config.cut_at, constraints.max_len + 1))
