"""The least that `wavenet-names serve` must give on a CPU, each a ratio of two things measured in
one run (or a latency bound), for requests of 8 names:
- a lone client: batched, at least 0.9x the names/s of one request at a time (it never waits for
  company it does not have);
- 64 clients: batched, at least 5x one at a time, with p99 latency under 250 ms;
- 64 clients: the server, at least half the names/s of the same model in-process, with no HTTP, for
  the same requests batched the same way: HTTP and JSON may cost at most half, on any machine;
- 256 clients against --max-queue 64: p99 of the answered under 250 ms, and the rest refused with 429."""

import serving

NAMES = 8
ALONE_FLOOR = 0.9  # batched / one at a time, names/s at 1 client
BATCHING_FLOOR = 5.0  # batched / one at a time, names/s at 64 clients
HTTP_FLOOR = 0.5  # the server / in-process, names/s at 64 clients
P99_CEILING_MS = 250.0
CROWD = 256


def test_batching_pays_at_64_clients_and_costs_nothing_alone():
    one, many = serving.compare([1, 64], seconds=6.0, names=NAMES)
    print()
    print(serving.table([one, many], NAMES), end="")

    def ratio(row):
        return row["batched"]["names_per_second"] / row["one at a time"]["names_per_second"]

    assert ratio(one) >= ALONE_FLOOR
    assert ratio(many) >= BATCHING_FLOOR
    assert many["batched"]["p99_ms"] < P99_CEILING_MS
    assert many["served"]["names_per_second"] >= HTTP_FLOOR * many["in-process"]["names_per_second"]


def test_a_crowd_over_the_queue_bound_is_refused_not_slowed():
    result = serving.crowd(CROWD, seconds=5.0, names=NAMES)
    print()
    print(serving.crowd_line(CROWD, result), end="")
    assert result["refused"] > 0 and result["requests"] > 0
    assert result["p99_ms"] < P99_CEILING_MS
