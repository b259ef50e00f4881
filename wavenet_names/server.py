"""`wavenet-names serve`: names over HTTP from one model, and a page to get them, on FastAPI.

The JSON API takes what `sample` takes (SampleConfig, Constraints and labels) and what `score` takes,
with an OpenAPI schema at /openapi.json and its page at /docs. The page at / is page.html: plain HTML
and a little JavaScript, which asks /api/model for the label columns it offers.

The model works in one thread, in bounded passes shared by the requests that draw alike
(scheduler.py): no request can hold the others, and a lone client never waits for company. Around
that, what an operator needs: /livez and /readyz, Prometheus metrics at /metrics, a bounded queue
(429 with Retry-After past --max-queue), a budget of tries and seconds for each request, a draw
that stops when its client goes, an id and an access-log line per request (middleware.py), and a
drain on SIGTERM (hosting.py).
"""

import asyncio
import json
import time
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from .choosing import SampleConfig
from .constraints import Constraints
from .draws import NameRequest
from .loading import LoadedModel
from .metrics import Metrics
from .middleware import Access, Bodies
from .models import count_params, kind_of
from .options import OptionError, default, option_fields
from .sampling import sampler
from .scheduler import MAX_ROWS, SampleJob, Scheduler, ScoreJob
from .scoring import score
from .serving import ServeConfig

MAX_NAMES = 1000  # names per request
MAX_ITEMS = 10_000  # items per score request
MAX_BODY = 1 << 20  # bytes of a request body: 1 MiB holds an exclude list of 100,000 names
RETRY_AFTER = "1"  # seconds, in a 429's Retry-After: a pass or two, with room to spare
WATCH_AFTER = 0.25  # seconds: a request not answered by then is watched for its client going away
DRAW_SHARE_OF_DRAIN = 0.8  # draws stop at this share of --drain-seconds, leaving the rest to answer them


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
    __config__=ConfigDict(extra="forbid", strict=True),  # "5" is not a count, and true is not a number
    **_option_fields(SampleConfig, Constraints, skip=("cut_at",)),
    labels=(dict[str, str], Field(default_factory=dict, description='a conditional model\'s labels: {"sex": "F"}')),
    exclude=(list[str], Field(default_factory=list, description="names to leave out, whatever their case")),
)


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
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


class NameServer:
    """The model served, the scheduler of its passes, its metrics, and whether it is ready or draining."""

    def __init__(self, checkpoints: list[str | Path], config: ServeConfig | None = None):
        self.loaded = LoadedModel.load(checkpoints)
        _ = self.loaded.seen, self.loaded.cut_at, self.loaded.columns  # (cached) made now, not at a request
        self.config = config = config or ServeConfig()
        self.metrics = Metrics()
        self.scheduler = Scheduler(self.loaded, config, self.metrics)
        self.ready = False  # the model loaded and one pass run
        self.draining = False

    def info(self) -> dict:
        columns = self.loaded.columns
        labels = {} if columns is None else dict(zip(columns.names, map(list, columns.values), strict=True))
        return {
            "checkpoint": self.loaded.names,
            "model": self.loaded.title,
            "kind": kind_of(self.loaded.model).name,
            "params": count_params(self.loaded.model),
            "val": self.loaded.val,  # its val loss per character when trained (None: not recorded)
            "labels": labels,
            "max_names": MAX_NAMES,
        }

    def job(self, request) -> SampleJob:
        """An API request (SampleRequest) as a job with its budget, or a ValueError that says what is
        wrong with it. Its tries are cut to the server's bound; its draw ends max_draw_seconds from now."""
        options = request.model_dump()
        if options["n"] > MAX_NAMES:
            raise OptionError("n", f"must be at most {MAX_NAMES}, got {options['n']}")
        labels = [f"{column}={value}" for column, value in options.pop("labels").items()]
        named = NameRequest.of(self.loaded, options, labels, options.pop("exclude"), what="labels")
        seeded = named.sampling.seed is not None  # drawn as `sample --seed` draws it, a batch at a time
        search = named.search(self.loaded, named.sampling.batch_size if seeded else MAX_ROWS)
        most = self.config.max_tries
        if search.tries > most:
            search.bound(most, f"this server draws at most {most:,} names for one request; loosen them")
        else:
            search.bound(search.tries, f"loosen them, or allow more with tries (at most {most:,} here)")
        deadline = time.monotonic() + self.config.max_draw_seconds
        return SampleJob(named, self.loaded.labels(labels, what="labels"), search, deadline=deadline)

    def admit(self) -> None:
        """Refuse a request at once when the server drains (503) or holds all it may (429)."""
        if self.draining:
            self.metrics.refused.labels("draining").inc()
            raise HTTPException(503, "the server is stopping", headers={"Connection": "close"})
        if self.scheduler.held >= self.config.max_queue:
            self.metrics.refused.labels("queue full").inc()
            raise HTTPException(
                429,
                f"the server holds {self.config.max_queue} requests; try again",
                headers={"Retry-After": RETRY_AFTER},
            )

    async def answered(self, job, request: Request):
        """The job's answer. A job not answered within WATCH_AFTER seconds is watched: if its client
        goes away, its draw stops at the next pass (and the answer goes to nobody: 499 in the log).
        Most are answered sooner, and cost no watcher."""
        answer = self.scheduler.submit(job)
        watcher = None

        def watch():
            nonlocal watcher
            watcher = asyncio.ensure_future(_stop_when_gone(job, request))

        timer = asyncio.get_running_loop().call_later(WATCH_AFTER, watch)
        try:
            result = await answer
        finally:
            timer.cancel()
            if watcher is not None:
                watcher.cancel()
        if job.gone:
            raise HTTPException(499, "the client went away")  # (nobody reads it: the access log does)
        return result

    def warm(self) -> None:
        """One pass of each kind the server runs, before it says it is ready: a name drawn and scored."""
        with sampler(self.loaded.model, self.loaded.vocab, SampleConfig(n=1), labels=self.loaded.labels([])) as drawn:
            names = drawn(1)
        score(self.loaded.model, self.loaded.vocab, [names[0].name], None)

    def drain(self) -> None:
        """Refuse new requests, say so at /readyz, and cut every draw short before drain_seconds are up."""
        self.draining = True
        self.scheduler.drain(DRAW_SHARE_OF_DRAIN * self.config.drain_seconds)


async def _stop_when_gone(job, request: Request) -> None:
    """Marks the job gone when its client goes (the body read, receive() waits for nothing else)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    job.gone = True


def create_app(checkpoints: list[str | Path], config: ServeConfig | None = None) -> FastAPI:
    """The server's app, for uvicorn (hosting.py) or a test's client."""
    server = NameServer(checkpoints, config)
    config = server.config
    page = files("wavenet_names").joinpath("page.html").read_text(encoding="utf-8")

    async def lifespan(app):
        passes = asyncio.create_task(server.scheduler.run())
        warm = asyncio.get_running_loop().run_in_executor(server.scheduler.executor, server.warm)
        warm.add_done_callback(lambda done: setattr(server, "ready", not done.cancelled() and not done.exception()))
        yield
        passes.cancel()
        server.scheduler.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="wavenet-names", summary="names from a WaveNet of characters", lifespan=lifespan)
    app.state.server = server
    add_routes(app, server, page)
    server.metrics.routes = frozenset(route.path for route in app.routes)
    app.openapi = with_bodies(app.openapi, (SampleRequest, ScoreRequest))
    app.add_middleware(Bodies, limit=MAX_BODY, seconds=config.read_seconds)
    if config.cors_origin:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origin),
            allow_methods=["GET", "POST"],
            allow_headers=["content-type", "x-request-id"],
            expose_headers=["x-request-id", "retry-after"],
        )
    app.add_middleware(Access, metrics=server.metrics, json_lines=config.log_format == "json")
    return app


async def parsed(model: type[BaseModel], request: Request) -> BaseModel:
    """The request's body as `model`, or a ValueError that names each field wrong and why.

    The routes read their bodies themselves, with pydantic's JSON parser, rather than through
    FastAPI's: it is the same check at a third of the cost, which counts at a thousand requests a
    second on two cores."""
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as e:
        problems = (f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}" for err in e.errors())
        raise ValueError("; ".join(problems)) from None


def body_of(model: type[BaseModel]) -> dict:
    """A route's `openapi_extra` for a body it reads itself (parsed): its schema, in /openapi.json."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def with_bodies(openapi, models: tuple[type[BaseModel], ...]):
    """FastAPI's openapi(), with the schemas of the bodies that routes read themselves."""

    def schema() -> dict:
        whole = openapi()
        schemas = whole.setdefault("components", {}).setdefault("schemas", {})
        for model in models:
            schemas.setdefault(model.__name__, model.model_json_schema(ref_template="#/components/schemas/{model}"))
        return whole

    return schema


def add_routes(app: FastAPI, server: NameServer, page: str) -> None:
    @app.exception_handler(ValueError)  # OptionError, DataError: a bad value of a good request
    async def bad_value(request: Request, e: ValueError):
        return JSONResponse({"detail": str(e)}, status_code=422)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return page

    @app.get("/api/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/livez")
    async def livez() -> dict:
        """200 while the process serves."""
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz():
        """200 once the model is loaded and has run a pass; 503 before, and while draining."""
        status = "draining" if server.draining else "ready" if server.ready else "starting"
        return JSONResponse({"status": status}, status_code=200 if status == "ready" else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        text, content_type = server.metrics.exposition()
        return Response(text, media_type=content_type)

    @app.get("/api/model")
    async def model() -> dict:
        """The model served: its kind, size and label columns with their values."""
        return server.info()

    @app.post("/api/sample", response_model=SampleResponse, openapi_extra=body_of(SampleRequest))
    async def sample(request: Request) -> Response:
        """Names drawn from the model, as `wavenet-names sample` draws them, each with its mark and loss."""
        server.admit()
        answer = await server.answered(server.job(await parsed(SampleRequest, request)), request)
        request.scope.setdefault("state", {})["names"] = len(answer["names"])  # for the access log
        return Response(json.dumps(answer), media_type="application/json")

    @app.post("/api/score", openapi_extra=body_of(ScoreRequest))
    async def score_items(request: Request) -> dict:
        """Each item's loss per character: the highest are the least like the training data."""
        server.admit()
        body = await parsed(ScoreRequest, request)
        labels = server.loaded.labels([f"{k}={v}" for k, v in body.labels.items()], what="labels")
        server.loaded.vocab.check(body.items)  # an unknown character: 422, before any work
        job = ScoreJob(body.items, None if labels is None else labels.expand(len(body.items), -1))
        losses = await server.answered(job, request)
        return {"scores": [{"item": item, "loss": loss} for item, loss in zip(body.items, losses, strict=True)]}
