"""The server's model thread and what it works on: requests for names and scores, drawn in bounded
passes, so that no request can hold the others.

One thread runs the model. It does one pass at a time: a generation pass for a group of sample
requests that draw alike (draws.NameRequest.pass_key; each row with its own request's labels), or
a chunk of one score request. Each pass is for the group that has waited longest since its last
pass, so a request that needs many passes (a rare constraint: drawn, thrown away, drawn again) is
drawn beside the others, not in front of them: a request that arrives behind it waits for at most
the pass in flight. A request is answered as soon as it is done, its names scored in one pass with
those of the others done at the same time.

Requests that arrive while a pass runs are gathered for the next one. When nothing is running, a
request starts at once, unless the last pass answered others, whose clients are likely to send
their next request within a few milliseconds: then the next pass waits up to `window` seconds for
those that have not come back yet. A lone client never waits for company it does not have.

Each request has a budget: a bound on its tries and on the time of its draw (ServeConfig). Over either,
or when its client has gone, or when the server drains, its draw stops and it is answered with what
it found and why.
"""

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field

import torch

from .choosing import Sampled
from .constraints import Search
from .draws import NameRequest
from .loading import LoadedModel
from .metrics import Metrics
from .sampling import sampler
from .scoring import score
from .serving import ServeConfig

MAX_ROWS = 1024  # names drawn in one pass, over every request in it: about 50 ms of a 2-core CPU
SCORE_CHUNK = 1024  # items of a score request scored in one pass


@dataclass(eq=False)
class SampleJob:
    """One sample request: the request, its labels (K,), the search that keeps its names, and, for a
    seeded one, its own random stream. Compared by identity: each is its own."""

    request: NameRequest
    labels: torch.Tensor | None
    search: Search
    waiting_since: float = field(default_factory=time.monotonic)  # arrival, then the end of its last pass
    deadline: float = float("inf")  # when its draw stops, whatever it has found
    gone: bool = False  # its client went away: draw no more for it
    draws: ExitStack | None = None  # a seeded job's own sampler, open from its first pass to its answer
    drawn: Callable[[int], list[Sampled]] | None = None  # (that sampler's draw)

    @property
    def seeded(self) -> bool:
        return self.request.sampling.seed is not None

    @property
    def key(self):
        """Jobs of one key share passes: those that draw alike; a seeded job draws alone."""
        return self if self.seeded else self.request.pass_key()

    @property
    def done(self) -> bool:
        return self.search.done


@dataclass(eq=False)
class ScoreJob:
    """One score request: its items, their labels (N, K), and the losses of those scored so far."""

    items: list[str]
    labels: torch.Tensor | None
    losses: list[float] = field(default_factory=list)
    waiting_since: float = field(default_factory=time.monotonic)
    gone: bool = False

    @property
    def key(self):
        return self

    @property
    def done(self) -> bool:
        return self.gone or len(self.losses) == len(self.items)


class Scheduler:
    """The model thread's passes, and, on the event loop, the queue that feeds them. `run()` is the
    loop's task; `submit()` hands it a job, for a future of its answer."""

    def __init__(self, loaded: LoadedModel, config: ServeConfig, metrics: Metrics):
        self.loaded, self.config, self.metrics = loaded, config, metrics
        self.window, self.batching = config.window_ms / 1000, not config.no_batching
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")  # the model's one thread
        self.queue = asyncio.Queue()  # (bound to the loop that first waits on it)
        self.active: list = []  # jobs taken from the queue and not yet answered
        self.futures: dict = {}  # job -> the future its request waits on
        self.coming_back = 0  # clients answered whose next request has not come: whom a pass waits for
        self.drain_deadline = float("inf")  # when draining: the time every draw stops

    @property
    def held(self) -> int:
        """Requests taken and not yet answered: queued, or being drawn."""
        return len(self.futures)

    def drain(self, seconds: float) -> None:
        """Stop every draw in `seconds` from now, answering each with what it found."""
        self.drain_deadline = min(self.drain_deadline, time.monotonic() + seconds)

    # --- the event loop ---------------------------------------------------------------------------

    def submit(self, job) -> asyncio.Future:
        """Queue the job: its future's result is a sample job's answer (answers()) or a score job's losses."""
        future = asyncio.get_running_loop().create_future()
        self.futures[job] = future
        future.add_done_callback(lambda _: self._forget(job))
        self.queue.put_nowait(job)
        self.metrics.queue_depth.set(self.held)
        return future

    def _forget(self, job) -> None:
        self.futures.pop(job, None)
        self.metrics.queue_depth.set(self.held)

    async def run(self) -> None:
        """Forever: gather jobs, run one pass in the model's thread, answer the jobs it finished."""
        loop = asyncio.get_running_loop()
        while True:
            self.active += await self.gather()
            try:
                finished = await loop.run_in_executor(self.executor, self.step, list(self.active))
            except Exception as e:  # a step that failed outside a pass: its jobs get the error, the server goes on
                finished = dict.fromkeys(self.active, e)
            self.coming_back += len(finished)
            for job, outcome in finished.items():
                self.active.remove(job)
                future = self.futures.get(job)
                if future is None or future.done():  # (a client that went away)
                    continue
                if isinstance(outcome, Exception):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    async def gather(self) -> list:
        """The jobs to add before the next pass: those queued while the last ran; with nothing to do,
        the next to arrive; then, while clients answered by earlier passes have not sent their next
        requests, up to `window` seconds for them."""
        loop = asyncio.get_running_loop()
        arrived = []
        if not self.active:
            started = loop.time()
            arrived.append(await self.queue.get())
            if loop.time() - started > self.window:  # idle for a while: nobody is coming back
                self.coming_back = 0
        while not self.queue.empty():
            arrived.append(self.queue.get_nowait())
        self.coming_back = max(0, self.coming_back - len(arrived))
        deadline = loop.time() + self.window
        while self.batching and self.coming_back > 0 and self._rows(arrived) < MAX_ROWS:
            try:
                arrived.append(await asyncio.wait_for(self.queue.get(), deadline - loop.time()))
                self.coming_back -= 1
            except asyncio.TimeoutError:  # (TimeoutError itself from Python 3.11) they are not coming
                self.coming_back = 0
                break
        return arrived

    def _rows(self, jobs) -> int:
        return sum(job.request.sampling.n for job in jobs if isinstance(job, SampleJob))

    # --- the model's thread -----------------------------------------------------------------------

    def step(self, active: list) -> dict:
        """Stop what is over its budget, run one pass for the group that has waited longest, and
        answer what is done: {job: its answer, or the exception that failed it}."""
        now = time.monotonic()
        for job in active:
            if isinstance(job, SampleJob):
                if job.gone:
                    job.search.stop("the client went away")
                elif now >= self.drain_deadline:
                    job.search.stop("the server is stopping")
                elif now >= job.deadline:
                    job.search.stop(f"this server draws for at most {self.config.max_draw_seconds:g} s for a request")
        failed = {}
        waiting = [job for job in active if not job.done]
        if waiting:
            group = self.next_group(waiting)
            try:
                self.run_pass(group)
            except Exception as e:  # one bad pass must not stop the server: its requests get the error
                failed = dict.fromkeys(group, e)
            for job in group:
                job.waiting_since = time.monotonic()
        finished = [job for job in active if job.done and job not in failed]
        try:
            return {**self.answers(finished), **failed}
        except Exception as e:
            return dict.fromkeys(finished, e) | failed

    def next_group(self, waiting: list) -> list:
        """The jobs of the key that has waited longest for a pass (without batching, its one job
        that has waited longest)."""
        group = min(groups(waiting), key=lambda jobs: min(job.waiting_since for job in jobs))
        return group if self.batching else [min(group, key=lambda job: job.waiting_since)]

    def run_pass(self, group: list) -> None:
        if isinstance(group[0], ScoreJob):
            self.score_chunk(group[0])
        elif group[0].seeded:
            self.draw_seeded(group[0])
        else:
            self.draw_pass(group)

    def draw_pass(self, group: list[SampleJob]) -> None:
        """One generation pass for a group of jobs: each draws its share of the rows, with its labels."""
        loaded = self.loaded
        sizes = shares([job.search.next_size() for job in group], MAX_ROWS)
        labels = None
        if loaded.columns is not None:
            labels = torch.cat([job.labels.expand(size, -1) for job, size in zip(group, sizes, strict=True)])
        with sampler(loaded.model, loaded.vocab, group[0].request.drawing(), labels=labels) as drawn:
            names = drawn(sum(sizes))
        self.metrics.requests_per_pass.observe(len(group))
        start = 0
        for job, size in zip(group, sizes, strict=True):
            self.took(job, names[start : start + size])
            start += size

    def draw_seeded(self, job: SampleJob) -> None:
        """One draw of a seeded job, from its own stream: the names `sample --seed` prints."""
        if job.draws is None:
            job.draws = ExitStack()
            loaded = self.loaded
            job.drawn = job.draws.enter_context(
                sampler(loaded.model, loaded.vocab, job.request.drawing(), labels=job.labels)
            )
        self.metrics.requests_per_pass.observe(1)
        self.took(job, job.drawn(job.search.next_size()))

    def took(self, job: SampleJob, names: list) -> None:
        kept = job.search.take(names)
        if job.request.constraints.any():
            self.metrics.rejected.inc(len(names) - len(kept))

    def score_chunk(self, job: ScoreJob) -> None:
        start = len(job.losses)
        items = job.items[start : start + SCORE_CHUNK]
        labels = None if job.labels is None else job.labels[start : start + len(items)]
        job.losses += score(self.loaded.model, self.loaded.vocab, items, labels)

    def answers(self, finished: list) -> dict:
        """The answers of the jobs done: a score job's losses; each sample job's names with their
        marks and losses (scored in one pass for them all), and its shortfall, if any."""
        answers = {job: job.losses for job in finished if isinstance(job, ScoreJob)}
        jobs = [job for job in finished if isinstance(job, SampleJob)]
        for job in jobs:
            if job.draws is not None:
                job.draws.close()
        loaded = self.loaded
        words = [s.name for job in jobs for s in job.search.found]
        labels = None
        if loaded.columns is not None and words:
            labels = torch.cat([job.labels.expand(len(job.search.found), -1) for job in jobs])
        losses = iter(score(loaded.model, loaded.vocab, words, labels) if words else [])
        self.metrics.names.inc(len(words))
        for job in jobs:
            shortfall = job.search.shortfall()
            answers[job] = {
                "names": [
                    {"name": s.name, "mark": loaded.mark(s), "loss": round(next(losses), 4)} for s in job.search.found
                ],
                "labels": loaded.label_values(job.labels),
                "complete": shortfall is None,
                "message": "" if shortfall is None else str(shortfall),
            }
        return answers


def groups(jobs: list) -> list[list]:
    """The jobs as they share passes: those of one key together."""
    by_key: dict = {}
    for job in jobs:
        by_key.setdefault(job.key, []).append(job)
    return list(by_key.values())


def shares(sizes: list[int], most: int) -> list[int]:
    """The rows of a pass for draws of these sizes, `most` in all: each draw all it asks if that
    fits; else the small ones all they ask, and the large ones an equal share of the rest (each at
    least 1). So a rare constraint's large draws never make a small request wait another pass."""
    if sum(sizes) <= most:
        return sizes
    given, left = [0] * len(sizes), most
    for rank, i in enumerate(sorted(range(len(sizes)), key=sizes.__getitem__)):
        given[i] = min(sizes[i], max(1, left // (len(sizes) - rank)))
        left -= given[i]
    return given
