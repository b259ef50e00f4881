"""Names drawn for a request: the one way that `sample` and the server's /api/sample turn options into
names. A NameRequest says how each name is drawn (SampleConfig), which names are kept (Constraints)
and the labels of every name; draw() gives its names, constrained or not, from one seeded stream.

The server draws the requests that arrive together in shared passes (server.py): it groups them by
NameRequest.pass_key(), which is derived from the request's own fields, so a sampling option added
later keeps requests that differ in it apart without anyone listing it.

Nothing here imports torch: a model exported to ONNX (portable.py) takes the same requests, and keeps
names by the same constraints, as a PyTorch one. The model is anything with LoadedModel's vocab,
cut_at, seen, labels() and sampler().
"""

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from .choosing import SampleConfig, Sampled
from .constraints import Constraints, Search, for_constraints
from .options import OptionError, option_fields

if TYPE_CHECKING:  # (for its annotations: LoadedModel is PyTorch's, and this module must not need torch)
    from .loading import LoadedModel


@dataclass(frozen=True)
class NameRequest:
    """Names asked of a model: how to draw them, which to keep, and every name's labels ("column=value";
    those not given are unknown)."""

    sampling: SampleConfig
    constraints: Constraints = field(default_factory=Constraints)
    labels: tuple[str, ...] = ()

    @classmethod
    def of(cls, loaded: "LoadedModel", options: dict, labels=(), exclude=(), what: str = "--label") -> "NameRequest":
        """A request from options by name, as `sample`'s flags and the API's fields name them
        (SampleConfig's and Constraints'; a cut_at not given is the model's own, LoadedModel.cut_at),
        checked against the model before anything is drawn: the prefix's and the ending's
        characters, a prefix longer than max_len, the labels (`what` names them in errors: the
        command line's --label, the API's labels). exclude: names to leave out."""
        sampling = SampleConfig(**{"cut_at": loaded.cut_at, **_picked(SampleConfig, options)})
        constraints = Constraints(**_picked(Constraints, options), exclude=tuple(exclude))
        loaded.vocab.encode(sampling.prefix)
        constraints.check(sampling, loaded.vocab)
        loaded.labels(labels, what)  # a label the model does not know: now, not after the first names
        if constraints.new and loaded.seen.missing:  # no names to tell new ones from
            raise OptionError("new", f"cannot be kept: {loaded.seen.missing}")
        return cls(sampling, constraints, tuple(labels))

    @staticmethod
    def option_names() -> set[str]:
        """The options that of() takes by name: SampleConfig's and Constraints'."""
        return {f.name for cls in (SampleConfig, Constraints) for f in option_fields(cls)}

    def drawing(self) -> SampleConfig:
        """How each name is drawn: the sampling settings, with a name cut just past max_len, since it is
        rejected whatever would follow."""
        return for_constraints(self.sampling, self.constraints)

    def pass_key(self) -> SampleConfig:
        """What requests must share to be drawn in one pass: every setting of how a name is drawn, all
        but how many. Labels go with each row of a pass, and constraints with each request's own
        search, so requests that differ only in those share passes."""
        return replace(self.drawing(), n=1)

    def search(self, loaded: "LoadedModel", batch_size: int) -> Search:
        """This request's draws, at most batch_size names at once: under constraints, names kept or
        drawn again; without any, every name drawn is kept, cut or not, in one draw of n."""
        n = self.sampling.n
        if self.constraints.any():
            return Search.of(n, self.constraints, loaded.seen, batch_size)
        return Search(n, lambda sampled: True, n, batch_size)


def _picked(cls, options: dict) -> dict:
    """The options of `options` that are fields of the dataclass `cls`."""
    return {f.name: options[f.name] for f in option_fields(cls) if f.name in options}


def draw(loaded: "LoadedModel", request: NameRequest, search: Search | None = None) -> Iterator[Sampled]:
    """The request's names, yielded a batch at a time as they are found (request.search, unless a
    search is given); after the last one found, raises constraints.TooRare if the bound on tries ran
    out first. The same seed gives the same names."""
    search = search or request.search(loaded, request.sampling.batch_size)
    labels = loaded.labels(request.labels)
    with loaded.sampler(request.drawing(), labels) as drawn:
        while not search.done:
            yield from search.take(drawn(search.next_size()))
    shortfall = search.shortfall()
    if shortfall is not None:
        raise shortfall
