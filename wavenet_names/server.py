"""`wavenet-names serve`: names over HTTP from one model, and a page to get them, on FastAPI.

The JSON API takes what `sample` takes (SampleConfig, Constraints and labels) and what `score` takes,
with an OpenAPI schema at /openapi.json and its page at /docs. The page at / is page.html: plain HTML
and a little JavaScript, which asks /api/model for the label columns it offers.

Requests are batched: a request waits up to `window` seconds (a few milliseconds) for others, and
those that arrive together are drawn in one cached generation pass: one forward per character for
all their names at once, which on a CPU costs little more than for one request's. Requests that
draw alike (draws.NameRequest.pass_key: every setting of how a name is drawn) share the rows of one
pass, each with its own labels; the names of each are then kept or drawn again under its own
constraints (constraints.Search), and every name kept is scored in one pass. A request with a seed is drawn
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

from .constraints import Constraints, Search, TooRare
from .draws import NameRequest, draw
from .loading import LoadedModel
from .models import count_params, kind_of
from .options import OptionError, default, option_fields
from .sampling import SampleConfig, sampler
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
    """One request's draws: the request, its labels (K,), and the search that keeps its names."""

    request: NameRequest
    labels: torch.Tensor | None
    search: Search
    future: asyncio.Future | None = None


class NameServer:
    """The model, its vocabulary and marks, and the batching of requests into generation passes."""

    def __init__(self, checkpoints: list[str | Path], window: float = WINDOW, batching: bool = True):
        self.loaded = LoadedModel.load(checkpoints)
        self.window, self.batching = window, batching
        self.executor = ThreadPoolExecutor(max_workers=1)  # the model works in one thread
        self.queue: asyncio.Queue | None = None

    def info(self) -> dict:
        columns = self.loaded.columns
        labels = {} if columns is None else dict(zip(columns.names, map(list, columns.values), strict=True))
        return {
            "checkpoint": self.loaded.names,
            "kind": kind_of(self.loaded.model).name,
            "params": count_params(self.loaded.model),
            "labels": labels,
            "max_names": MAX_NAMES,
        }

    def job(self, request) -> Job:
        """An API request (SampleRequest) as a Job, or a ValueError that says what is wrong with it."""
        options = request.model_dump()
        if options["n"] > MAX_NAMES:
            raise OptionError("n", f"must be at most {MAX_NAMES}, got {options['n']}")
        labels = [f"{column}={value}" for column, value in options.pop("labels").items()]
        exclude = options.pop("exclude")
        named = NameRequest.of(self.loaded, options, labels, exclude, what="labels")
        return Job(named, self.loaded.labels(labels, what="labels"), named.search(self.loaded, MAX_ROWS))

    # --- the model's thread ---------------------------------------------------------------------

    def draw(self, jobs: list[Job]) -> None:
        """Draw for every job, in passes shared by the jobs of one key, until each is done."""
        while groups := self.passes(jobs):
            for group in groups:
                self.draw_pass(group)

    @staticmethod
    def passes(jobs: list[Job]) -> list[list[Job]]:
        """The jobs not yet done, grouped as they share a pass: by their requests' pass_key."""
        by_key: dict[SampleConfig, list[Job]] = {}
        for job in jobs:
            if not job.search.done:
                by_key.setdefault(job.request.pass_key(), []).append(job)
        return list(by_key.values())

    def draw_pass(self, group: list[Job]) -> None:
        """One generation pass for a group of jobs: each draws its share of the rows, with its labels."""
        loaded = self.loaded
        sizes = shares([job.search.next_size() for job in group], MAX_ROWS)
        labels = None
        if loaded.columns is not None:
            labels = torch.cat([job.labels.expand(size, -1) for job, size in zip(group, sizes, strict=True)])
        with sampler(loaded.model, loaded.vocab, group[0].request.drawing(), labels=labels) as drawn:
            names = drawn(sum(sizes))
        start = 0
        for job, size in zip(group, sizes, strict=True):
            job.search.take(names[start : start + size])
            start += size

    def serve_seeded(self, job: Job) -> SampleResponse:
        """A seeded request alone, with its own random stream, as `sample --seed` draws it."""
        try:
            for _ in draw(self.loaded, job.request, job.search):
                pass
        except TooRare:  # the names found: the response says why there are not more
            pass
        return self.respond([job])[0]

    def serve(self, jobs: list[Job]) -> list[SampleResponse]:
        """Draw for the jobs and answer them, in one hand-off to the model's thread."""
        self.draw(jobs)
        return self.respond(jobs)

    def respond(self, jobs: list[Job]) -> list[SampleResponse]:
        """Every job's names with their marks and losses, scored in one pass."""
        loaded = self.loaded
        words = [s.name for job in jobs for s in job.search.found]
        labels = None
        if loaded.columns is not None:
            labels = torch.cat([job.labels.expand(len(job.search.found), -1) for job in jobs])
        losses = iter(score(loaded.model, loaded.vocab, words, labels) if words else [])
        responses = []
        for job in jobs:
            names = [
                Name(name=sampled.name, mark=loaded.mark(sampled), loss=round(next(losses), 4))
                for sampled in job.search.found
            ]
            shortfall = job.search.shortfall()
            message = "" if shortfall is None else str(shortfall)
            responses.append(
                SampleResponse(
                    names=names, labels=loaded.label_values(job.labels), complete=shortfall is None, message=message
                )
            )
        return responses

    # --- the event loop ---------------------------------------------------------------------------

    async def sample(self, job: Job) -> SampleResponse:
        loop = asyncio.get_running_loop()
        if job.request.sampling.seed is not None:
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
            while self.batching and sum(job.request.sampling.n for job in jobs) < MAX_ROWS:
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
        problems = "; ".join(f"{'.'.join(map(str, err['loc'][1:])) or 'body'}: {err['msg']}" for err in errors)
        return JSONResponse({"detail": problems or "a bad request"}, status_code=422)

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
        labels = server.loaded.labels([f"{k}={v}" for k, v in request.labels.items()], what="labels")
        stacked = None if labels is None else labels.expand(len(request.items), -1)
        loop = asyncio.get_running_loop()
        model, vocab = server.loaded.model, server.loaded.vocab
        losses = await loop.run_in_executor(server.executor, score, model, vocab, request.items, stacked)
        return {"scores": [{"item": item, "loss": loss} for item, loss in zip(request.items, losses, strict=True)]}

    app.add_middleware(BodyLimit)
    return app
