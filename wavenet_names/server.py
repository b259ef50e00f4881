"""`wavenet-names serve`: names over HTTP from one model, and a page to get them, on FastAPI.

The JSON API takes what `sample` takes (SampleConfig, Constraints and labels) and what `score` takes,
with an OpenAPI schema at /openapi.json and its page at /docs. The page at / is page.html: plain HTML
and a little JavaScript, which asks /api/model for the label columns it offers.

Requests are batched: a request waits up to `window` seconds (a few milliseconds) for others, and
those that arrive together are drawn in one cached generation pass: one forward per character for
all their names at once, which on a CPU costs little more than for one request's. Requests with
the same sampling settings (temperature, top-k, top-p, prefix, cut) share the rows of one draw,
each with its own labels; the names of each are then kept or drawn again under its own constraints
(constraints.Search), and every name kept is scored in one pass. A request with a seed is drawn
alone, with its own random stream, and gets the names that `sample --seed` prints.

The model runs in one worker thread, so the event loop stays free to take requests while it works.
"""

import asyncio
import math
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, create_model

from .checkpoint import label_columns, load_models
from .constraints import Constraints, Search, TooRare, for_constraints, stream_constrained
from .data import DataError
from .models import count_params, kind_of
from .options import OptionError, default, option_fields
from .sampling import SampleConfig, Seen, default_cut_at, sampler, stream_sampled
from .scoring import score

MAX_NAMES = 1000  # names per request
MAX_ROWS = 4096  # names drawn in one pass, over every request batched into it
MAX_ITEMS = 10_000  # items per score request
MAX_BODY = 1 << 20  # bytes of a request body: 1 MiB holds an exclude list of 100,000 names
WINDOW = 0.005  # seconds a request waits for others to share its pass


def _option_fields(*classes, skip: tuple[str, ...] = ()) -> dict:
    """The options of config dataclasses as pydantic fields: their defaults and help, from one place."""
    return {
        f.name: (f.type, Field(default(f), description=f.metadata["help"]))
        for cls in classes
        for f in option_fields(cls)
        if f.name not in skip
    }


SampleRequest = create_model(
    "SampleRequest",
    __config__=ConfigDict(extra="forbid"),
    **_option_fields(SampleConfig, Constraints, skip=("cut_at",)),
    labels=(dict[str, str], Field(default_factory=dict, description='a conditional model\'s labels: {"sex": "F"}')),
    exclude=(list[str], Field(default_factory=list, description="names to leave out")),
)


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[str] = Field(max_length=MAX_ITEMS, description="the items to score, each its loss per character")
    labels: dict[str, str] = Field(default_factory=dict, description="labels of every item, for a conditional model")


class Name(BaseModel):
    name: str
    mark: str = Field(description='"*": of the training split; "+": of val or test; "": new; "cut": not ended')
    loss: float = Field(description="the model's loss per character on it, its end included")


class SampleResponse(BaseModel):
    names: list[Name]
    labels: dict[str, str] = Field(description="the labels drawn with: those given, the rest unknown")
    complete: bool = Field(description="false when the constraints were too rare: the names found, and why")
    message: str = ""


@dataclass
class Job:
    """One request's draws: its sampling config, labels (K,), constraints and their search."""

    config: SampleConfig
    labels: torch.Tensor | None
    constraints: Constraints
    search: Search
    future: asyncio.Future | None = None

    def key(self) -> tuple:
        """What requests must share to be drawn in one pass."""
        c = self.config
        return (c.temperature, c.top_k, c.top_p, c.prefix, c.cut_at)


class NameServer:
    """The model, its vocabulary and marks, and the batching of requests into generation passes."""

    def __init__(self, checkpoints: list[str | Path], window: float = WINDOW, batching: bool = True):
        self.model, self.vocab, checkpoint = load_models(checkpoints)
        self.name = ", ".join(map(str, checkpoints))
        self.seen = Seen.of_checkpoint(checkpoint)
        self.columns = label_columns(checkpoint)
        self.cut_at = default_cut_at(self.seen.train)
        self.window, self.batching = window, batching
        self.executor = ThreadPoolExecutor(max_workers=1)  # the model works in one thread
        self.queue: asyncio.Queue | None = None

    def info(self) -> dict:
        columns = self.columns
        labels = {} if columns is None else dict(zip(columns.names, map(list, columns.values), strict=True))
        return {
            "checkpoint": self.name,
            "kind": kind_of(self.model).name,
            "params": count_params(self.model),
            "labels": labels,
            "max_names": MAX_NAMES,
        }

    def labels(self, given: dict[str, str]) -> torch.Tensor | None:
        """(K,) label numbers, unknown where not given; None for a model without labels."""
        if self.columns is None:
            if given:
                raise DataError("labels: this model was trained without labels")
            return None
        return self.columns.parse([f"{k}={v}" for k, v in given.items()], what="label")

    def shown(self, labels: torch.Tensor | None) -> dict[str, str]:
        """(K,) label numbers as {column: value}, leaving out the unknown ones."""
        if labels is None:
            return {}
        columns = self.columns
        return {columns.names[k]: columns.values[k][int(v) - 1] for k, v in enumerate(labels) if int(v) > 0}

    def job(self, request) -> Job:
        """A request as a Job, or a ValueError that says what is wrong with it."""
        options = request.model_dump()
        if options["n"] > MAX_NAMES:
            raise OptionError("n", f"must be at most {MAX_NAMES}, got {options['n']}")
        sample = {f.name: options[f.name] for f in option_fields(SampleConfig) if f.name != "cut_at"}
        config = SampleConfig(**sample, cut_at=self.cut_at)
        constraint_names = [f.name for f in option_fields(Constraints)]
        constraints = Constraints(**{k: options[k] for k in constraint_names}, exclude=tuple(options["exclude"]))
        self.vocab.encode(config.prefix)
        constraints.check(config, self.vocab)
        labels = self.labels(options["labels"])
        if constraints.any():
            search = Search.of(config.n, constraints, self.seen, MAX_ROWS)
        else:  # every name drawn is kept, cut or not, as `sample` prints it: one draw of n
            search = Search(config.n, lambda sampled: True, config.n, MAX_ROWS)
        return Job(for_constraints(config, constraints), labels, constraints, search)

    # --- the model's thread ---------------------------------------------------------------------

    def draw(self, jobs: list[Job]) -> None:
        """Draw for every job, in passes shared by the jobs of one key, until each is done."""
        while open_jobs := [job for job in jobs if not job.search.done]:
            by_key: dict[tuple, list[Job]] = {}
            for job in open_jobs:
                by_key.setdefault(job.key(), []).append(job)
            for group in by_key.values():
                sizes = shares([job.search.next_size() for job in group], MAX_ROWS)
                labels = None
                if self.columns is not None:
                    labels = torch.cat([job.labels.expand(size, -1) for job, size in zip(group, sizes, strict=True)])
                with sampler(self.model, self.vocab, group[0].config, labels=labels) as draw:
                    drawn = draw(sum(sizes))
                start = 0
                for job, size in zip(group, sizes, strict=True):
                    job.search.take(drawn[start : start + size])
                    start += size

    def serve_seeded(self, job: Job) -> SampleResponse:
        self.draw_seeded(job)
        return self.respond([job])[0]

    def draw_seeded(self, job: Job) -> None:
        """A seeded request alone, with its own random stream, as `sample --seed` draws it."""
        if not job.constraints.any():
            job.search.found = list(stream_sampled(self.model, self.vocab, job.config, labels=job.labels))
            return
        names = stream_constrained(self.model, self.vocab, job.config, job.constraints, self.seen, job.labels)
        try:
            for sampled in names:
                job.search.found.append(sampled)
        except TooRare as e:
            job.search.drawn = e.tries

    def serve(self, jobs: list[Job]) -> list[SampleResponse]:
        """Draw for the jobs and answer them, in one hand-off to the model's thread."""
        self.draw(jobs)
        return self.respond(jobs)

    def respond(self, jobs: list[Job]) -> list[SampleResponse]:
        """Every job's names with their marks and losses, scored in one pass."""
        words = [s.name for job in jobs for s in job.search.found]
        labels = None
        if self.columns is not None:
            labels = torch.cat([job.labels.expand(len(job.search.found), -1) for job in jobs])
        losses = iter(score(self.model, self.vocab, words, labels) if words else [])
        responses = []
        for job in jobs:
            names = []
            for sampled in job.search.found:
                mark = self.seen.mark(sampled.name).strip() if sampled.ended else "cut"
                names.append(Name(name=sampled.name, mark=mark, loss=round(next(losses), 4)))
            shortfall = job.search.shortfall()
            responses.append(
                SampleResponse(
                    names=names, labels=self.shown(job.labels), complete=shortfall is None, message=str(shortfall or "")
                )
            )
        return responses

    # --- the event loop ---------------------------------------------------------------------------

    async def sample(self, job: Job) -> SampleResponse:
        loop = asyncio.get_running_loop()
        if job.config.seed is not None:
            return await loop.run_in_executor(self.executor, self.serve_seeded, job)
        job.future = loop.create_future()
        await self.queue.put(job)
        return await job.future

    async def batches(self) -> None:
        """Forever: take a job, wait up to `window` for more (up to MAX_ROWS names), serve them in one pass."""
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            deadline = loop.time() + self.window
            while self.batching and sum(job.config.n for job in jobs) < MAX_ROWS:
                if not self.queue.empty():  # those that came while the last pass ran, without waiting
                    jobs.append(self.queue.get_nowait())
                    continue
                try:
                    jobs.append(await asyncio.wait_for(self.queue.get(), max(0.0, deadline - loop.time())))
                except asyncio.TimeoutError:  # (TimeoutError itself from Python 3.11)
                    break
            try:
                responses = await loop.run_in_executor(self.executor, self.serve, jobs)
            except Exception as e:  # one bad pass must not stop the server: its requests get the error
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(e)
                continue
            for job, response in zip(jobs, responses, strict=True):
                if not job.future.done():  # (a client that went away)
                    job.future.set_result(response)


def shares(sizes: list[int], most: int) -> list[int]:
    """Sizes of draws cut down in proportion to fit `most` rows in all, each at least 1."""
    total = sum(sizes)
    return sizes if total <= most else [max(1, size * most // total) for size in sizes]


class BodyLimit:
    """Refuses a request body over `limit` bytes with 413, whether it declares its length or not."""

    def __init__(self, app, limit: int = MAX_BODY):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _too_large(send, self.limit)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await _too_large(send, self.limit)


class _TooLarge(Exception):
    pass


async def _too_large(send, limit: int) -> None:
    body = f'{{"detail": "the request body is over {limit:,} bytes"}}'.encode()
    await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) and listening, for uvicorn to serve on.

    It names IPPROTO_TCP, not 0 as socket.create_server does, since asyncio turns Nagle's algorithm
    off (TCP_NODELAY) only on the connections of sockets that name it. With Nagle on, the body of
    every response, written after its head, waited for the client's delayed ACK: 40 ms each.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
        listener.listen(2048)
    except OSError:
        listener.close()
        raise
    return listener


def create_app(checkpoints: list[str | Path], window: float = WINDOW, batching: bool = True) -> FastAPI:
    """The server's app, for uvicorn (wavenet-names serve) or a test's client."""
    if not math.isfinite(window) or window < 0:
        raise ValueError(f"the batching window must be a number of seconds, not negative, got {window}")
    server = NameServer(checkpoints, window, batching)
    page = files("wavenet_names").joinpath("page.html").read_text(encoding="utf-8")

    async def lifespan(app):
        server.queue = asyncio.Queue()
        task = asyncio.create_task(server.batches())
        yield
        task.cancel()
        server.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="wavenet-names", summary="names from a WaveNet of characters", lifespan=lifespan)
    app.state.server = server

    @app.exception_handler(ValueError)  # OptionError, DataError: a bad value of a good request
    async def bad_value(request: Request, e: ValueError):
        return JSONResponse({"detail": str(e)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, e: RequestValidationError):
        errors = e.errors()
        shown = "; ".join(f"{'.'.join(map(str, err['loc'][1:])) or 'body'}: {err['msg']}" for err in errors)
        return JSONResponse({"detail": shown or "a bad request"}, status_code=422)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return page

    @app.get("/api/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/api/model")
    async def model() -> dict:
        """The model served: its kind, size and label columns with their values."""
        return server.info()

    @app.post("/api/sample")
    async def sample(request: SampleRequest) -> SampleResponse:
        """Names drawn from the model, as `wavenet-names sample` draws them, each with its mark and loss."""
        return await server.sample(server.job(request))

    @app.post("/api/score")
    async def score_items(request: ScoreRequest) -> dict:
        """Each item's loss per character: the highest are the least like the training data."""
        labels = server.labels(request.labels)
        stacked = None if labels is None else labels.expand(len(request.items), -1)
        loop = asyncio.get_running_loop()
        losses = await loop.run_in_executor(server.executor, score, server.model, server.vocab, request.items, stacked)
        return {"scores": [{"item": item, "loss": loss} for item, loss in zip(request.items, losses, strict=True)]}

    app.add_middleware(BodyLimit)
    return app
