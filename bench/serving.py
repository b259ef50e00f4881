"""What batching buys `wavenet-names serve`: names/s and latency at 1, 8 and 64 concurrent clients,
batched against one request at a time, two servers measured in turn in one run.

Each client is a coroutine of one process, on one kept-alive connection, sending its next request
as soon as the last is answered: a request for 8 names, with no constraint, from the shipped names
model. The clients' own cost is kept small (hand-written HTTP/1.1 over asyncio streams), since they
share the machine's cores with the server.

    python bench/serving.py [--clients 1 8 64] [--seconds 5] [--names 8]
"""

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager


@contextmanager
def server(batching: bool, checkpoint: str = "names"):
    """A `wavenet-names serve` process on a free port: yields (host, port)."""
    command = [sys.executable, "-m", "wavenet_names", "serve", "--checkpoint", checkpoint, "--port", "0"]
    if not batching:
        command.append("--no-batching")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        if "serving" not in line:
            raise RuntimeError(f"the server did not start: {line!r}")
        host, port = line.split("http://")[1].split("/")[0].rsplit(":", 1)
        yield host, int(port)
    finally:
        process.terminate()
        process.wait(timeout=30)


async def _client(host: str, port: int, body: bytes, until: float, latencies: list[float], errors: list) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    request = (
        f"POST /api/sample HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body
    try:
        while time.perf_counter() < until:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
            )
            answer = await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(answer)
    finally:
        writer.close()


def load(host: str, port: int, clients: int, seconds: float, names: int) -> dict:
    """`clients` clients for `seconds`: names/s, and p50 and p99 latency in ms."""
    body = json.dumps({"n": names}).encode()

    async def run():
        latencies, errors = [], []
        until = time.perf_counter() + seconds
        start = time.perf_counter()
        await asyncio.gather(*(_client(host, port, body, until, latencies, errors) for _ in range(clients)))
        return latencies, errors, time.perf_counter() - start

    latencies, errors, elapsed = asyncio.run(run())
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, the first: {errors[0][:200]!r}")
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {
        "requests": len(latencies),
        "names_per_second": len(latencies) * names / elapsed,
        "p50_ms": 1000 * cuts[49],
        "p99_ms": 1000 * cuts[98],
    }


def compare(clients: list[int], seconds: float, names: int) -> list[dict]:
    """Both servers, one at a time per client count (one request at a time first, then batched, then
    the other order for the next count), after a warm-up of each."""
    rows = []
    with server(batching=False) as alone, server(batching=True) as batched:
        for address in (alone, batched):
            load(*address, 8, 1.0, names)  # warm: first passes, allocations
        for i, count in enumerate(clients):
            order = [("one at a time", alone), ("batched", batched)]
            measured = {name: load(*address, count, seconds, names) for name, address in order[:: 1 - 2 * (i % 2)]}
            rows.append({"clients": count, **{name: measured[name] for name, _ in order}})
    return rows


def table(rows: list[dict], names: int) -> str:
    lines = [
        "| clients | one at a time names/s | batched names/s | ratio | one at a time p50 / p99 ms "
        "| batched p50 / p99 ms |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        a, b = r["one at a time"], r["batched"]
        lines.append(
            f"| {r['clients']} | {a['names_per_second']:,.0f} | {b['names_per_second']:,.0f} | "
            f"{b['names_per_second'] / a['names_per_second']:.1f}x | {a['p50_ms']:.1f} / {a['p99_ms']:.1f} | "
            f"{b['p50_ms']:.1f} / {b['p99_ms']:.1f} |"
        )
    return f"Requests of {names} names, each client on one connection.\n\n" + "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--seconds", type=float, default=5.0, help="of load per server and client count")
    parser.add_argument("--names", type=int, default=8, help="per request")
    args = parser.parse_args()
    print(table(compare(args.clients, args.seconds, args.names), args.names), end="")
