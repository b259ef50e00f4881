"""The least that batching must give `wavenet-names serve` on a CPU, as ratios of two servers
measured in turn in one run: at 64 concurrent clients asking for 8 names each, 5x the names/s of one
request at a time, with p99 latency under 250 ms."""

import serving

NAMES = 8
BATCHING_FLOOR = 5.0  # batched / one at a time, names/s at 64 clients
P99_CEILING_MS = 250.0


def test_batching_at_64_clients():
    (row,) = serving.compare([64], seconds=5.0, names=NAMES)
    print()
    print(serving.table([row], NAMES), end="")
    ratio = row["batched"]["names_per_second"] / row["one at a time"]["names_per_second"]
    assert ratio >= BATCHING_FLOOR
    assert row["batched"]["p99_ms"] < P99_CEILING_MS
