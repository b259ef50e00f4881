"""The server's passes (scheduler.py), in-process: which requests share a pass, which pass comes next,
the budget of each request, and when a pass waits for company."""

import asyncio

import pytest

from wavenet_names import shipped
from wavenet_names.scheduler import MAX_ROWS, groups, shares
from wavenet_names.server import NameServer, SampleRequest
from wavenet_names.serving import ServeConfig

BY_DECADE = shipped.path_of("names-by-decade")


@pytest.fixture(scope="module")
def server():
    return NameServer([BY_DECADE])


def passes_of(server) -> tuple[int, float]:
    """The passes so far and the requests drawn in them, from the server's histogram of them."""
    samples = {s.name: s.value for s in server.metrics.requests_per_pass.collect()[0].samples}
    return int(samples["wavenet_names_requests_per_pass_count"]), samples["wavenet_names_requests_per_pass_sum"]


def test_a_plain_request_is_drawn_before_a_rare_one_draws_again():
    """A rare constraint that needs pass after pass, and a plain request (of another key) that
    arrives while its first pass runs: the plain one has the next pass, and is answered from it,
    while the rare one goes on."""
    server = NameServer([BY_DECADE], ServeConfig(max_tries=50_000))
    rare = server.job(SampleRequest(n=50, ends_with="zzq", max_len=9))  # max_len: a key of its own
    plain = server.job(SampleRequest(n=3))
    scheduler = server.scheduler
    assert scheduler.step([rare]) == {}  # its first pass: nothing found, nothing answered
    answered = scheduler.step([rare, plain])
    assert list(answered) == [plain] and len(answered[plain]["names"]) == 3
    assert not rare.done and rare.search.drawn > 0


def test_the_group_that_waited_longest_has_the_next_pass(server):
    first, second = server.job(SampleRequest(n=2, temperature=0.5)), server.job(SampleRequest(n=2))
    first.waiting_since, second.waiting_since = 2.0, 1.0
    assert server.scheduler.next_group([first, second]) == [second]


@pytest.mark.parametrize(
    "budget, request_, message",
    [
        ({"max_tries": 2_000}, {"tries": 100_000_000}, "this server draws at most 2,000 names for one request"),
        ({"max_tries": 2_000}, {"tries": 500}, "allow more with tries (at most 2,000 here)"),
        ({"max_draw_seconds": 0.2, "max_tries": 10**9}, {"tries": 10**9}, "draws for at most 0.2 s for a request"),
    ],
)
def test_a_request_over_its_budget_is_answered_with_what_it_found_and_why(budget, request_, message):
    server = NameServer([BY_DECADE], ServeConfig(**budget))
    job = server.job(SampleRequest(n=5, ends_with="zzq", **request_))
    answers = {}
    while not answers:
        answers = server.scheduler.step([job])
    answer = answers[job]
    assert answer["complete"] is False and message in answer["message"], answer["message"]
    assert "--tries" not in answer["message"]  # the API's field, not the command line's flag


def test_a_job_whose_client_went_away_is_drawn_no_more(server):
    job = server.job(SampleRequest(n=50, ends_with="zzq", tries=10**6))
    server.scheduler.step([job])
    drawn = job.search.drawn
    job.gone = True
    assert list(server.scheduler.step([job])) == [job] and job.search.drawn == drawn


def test_a_drain_cuts_every_draw_short():
    server = NameServer([BY_DECADE], ServeConfig(max_tries=10**6))
    job = server.job(SampleRequest(n=50, ends_with="zzq"))
    server.scheduler.step([job])
    server.scheduler.drain(0)
    answer = server.scheduler.step([job])[job]
    assert answer["complete"] is False and "the server is stopping" in answer["message"]


def test_a_seeded_request_is_drawn_alone_from_its_own_stream(server):
    jobs = [
        server.job(SampleRequest(n=4, seed=3)),
        server.job(SampleRequest(n=4, seed=3)),
        server.job(SampleRequest(n=4)),
    ]
    assert len(groups(jobs)) == 3
    answers = {}
    while len(answers) < 3:
        answers |= server.scheduler.step([job for job in jobs if job not in answers])
    assert answers[jobs[0]]["names"] == answers[jobs[1]]["names"]  # each its own stream: the same names


def test_shares_fit_the_rows_of_a_pass():
    assert shares([10, 20], MAX_ROWS) == [10, 20]
    cut = shares([MAX_ROWS, MAX_ROWS, 1], MAX_ROWS)
    assert sum(cut) == MAX_ROWS and cut[2] == 1 and abs(cut[0] - cut[1]) <= 1
    beside_a_rare_one = shares([8] * 64 + [MAX_ROWS], MAX_ROWS)  # the small ones whole, in this pass
    assert beside_a_rare_one == [8] * 64 + [MAX_ROWS - 64 * 8]


# --- on the event loop --------------------------------------------------------------------------


def serving(server, scenario):
    """Run the server's scheduler on an event loop while `scenario(submit)` runs; its result."""

    async def main():
        task = asyncio.create_task(server.scheduler.run())
        try:
            return await asyncio.wait_for(scenario(server.scheduler.submit), 60)
        finally:
            task.cancel()

    return asyncio.run(main())


def test_a_lone_client_never_waits_for_company():
    """A window of a minute: a lone client's requests, one after another, are each drawn at once
    (each within 30 s), since nobody else is there to wait for."""
    server = NameServer([BY_DECADE], ServeConfig(window_ms=60_000))

    async def lone(submit):
        for _ in range(3):
            await asyncio.wait_for(submit(server.job(SampleRequest(n=2))), 30)

    serving(server, lone)
    assert passes_of(server) == (3, 3.0)


def test_a_pass_waits_for_the_clients_of_the_last_one():
    """Two clients answered by one pass: the next pass waits (here up to a minute) for both to come
    back, and draws them together."""
    server = NameServer([BY_DECADE], ServeConfig(window_ms=60_000))

    async def two(submit):
        await asyncio.gather(*(submit(server.job(SampleRequest(n=2))) for _ in range(2)))
        first = submit(server.job(SampleRequest(n=2)))
        await asyncio.sleep(0.5)
        assert not first.done()  # waiting for the other client
        await asyncio.gather(first, submit(server.job(SampleRequest(n=2))))

    serving(server, two)
    assert passes_of(server) == (2, 4.0)


@pytest.mark.parametrize("window", [50.0, 0.0])  # 0: those already queued still share the pass
def test_requests_that_arrive_together_share_one_generation_pass(window):
    """Eight requests at once, with the same settings and other labels: one pass of their 8 x 4 rows."""
    server = NameServer([BY_DECADE], ServeConfig(window_ms=window))

    async def together(submit):
        requests = [SampleRequest(n=4, labels={"sex": "FM"[i % 2]}) for i in range(8)]
        return await asyncio.gather(*(submit(server.job(r)) for r in requests))

    answers = serving(server, together)
    assert passes_of(server) == (1, 8.0)
    assert all(len(a["names"]) == 4 and a["complete"] for a in answers)
    assert [a["labels"] for a in answers] == [{"sex": "FM"[i % 2]} for i in range(8)]
