"""What `wavenet-names serve` gives, measured in one run: names/s and latency at 1, 8 and 64
concurrent clients, batched against one request at a time (two servers measured in turn); at 64
clients, the batched server against the same model in-process, with no HTTP, for the same requests
batched the same way; 256 clients against a queue bounded at 64; and, with --rare, requests for
one name beside a request whose constraint is too rare to meet.

Each client is a coroutine of one process, on one kept-alive connection, sending its next request
as soon as the last is answered (after a 429, when its Retry-After says): a request for 8 names,
with no constraint, from the shipped names model. The clients' own cost is kept small
(hand-written HTTP/1.1 over asyncio streams), since they share the machine's cores with the server.

    python bench/serving.py [--clients 1 8 64] [--seconds 5] [--names 8] [--crowd 256] [--rare]
"""

import argparse
import asyncio
import gc
import json
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager

CHECKPOINT = "names"


@contextmanager
def server(*flags: str):
    """A `wavenet-names serve` process on a free port, its access log dropped: yields (host, port)."""
    command = [sys.executable, "-m", "wavenet_names", "serve", "--checkpoint", CHECKPOINT, "--port", "0", *flags]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = process.stdout.readline()
        if "serving" not in line:
            raise RuntimeError(f"the server did not start: {line!r}")
        host, port = line.split("http://")[1].split("/")[0].rsplit(":", 1)
        address = host, int(port)
        while not ready(*address):
            time.sleep(0.1)
        yield address
    finally:
        process.terminate()
        process.wait(timeout=30)


def ready(host: str, port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://{host}:{port}/readyz").status == 200
    except urllib.error.HTTPError:  # 503: not yet
        return False


async def _client(host: str, port: int, body: bytes, until: float, outcome: dict) -> None:
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
            fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line)
            answer = await reader.readexactly(int(fields[b"content-length"]))
            status = int(head.split(b" ", 2)[1])
            if status == 200:
                outcome["latencies"].append(time.perf_counter() - start)
            elif status == 429:
                outcome["refused"] += 1
                await asyncio.sleep(float(fields[b"retry-after"]))
            else:
                outcome["errors"].append(answer)
    finally:
        writer.close()


def load(host: str, port: int, clients: int, seconds: float, names: int) -> dict:
    """`clients` clients for `seconds`: the latencies of the 200s, the 429s, and the time it took."""
    body = json.dumps({"n": names}).encode()

    async def run():
        outcome = {"latencies": [], "refused": 0, "errors": []}
        until = time.perf_counter() + seconds
        start = time.perf_counter()
        await asyncio.gather(*(_client(host, port, body, until, outcome) for _ in range(clients)))
        return outcome | {"seconds": time.perf_counter() - start}

    outcome = asyncio.run(run())
    if outcome["errors"]:
        raise RuntimeError(f"{len(outcome['errors'])} requests failed, the first: {outcome['errors'][0][:200]!r}")
    return outcome


def summary(outcomes: list[dict], names: int) -> dict:
    """Loads pooled: names/s, p50 and p99 latency in ms of the 200s, and the 429s."""
    latencies = [latency for outcome in outcomes for latency in outcome["latencies"]]
    seconds = sum(outcome["seconds"] for outcome in outcomes)
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {
        "requests": len(latencies),
        "refused": sum(outcome["refused"] for outcome in outcomes),
        "names_per_second": len(latencies) * names / seconds,
        "p50_ms": 1000 * cuts[49],
        "p99_ms": 1000 * cuts[98],
    }


def interleaved(first, second, seconds: float) -> tuple[list, list]:
    """first and second, each for `seconds` in all, as first, second, second, first (half the time
    each): a machine that slows or speeds up during the run weighs on both alike."""
    a, b = [first(seconds / 2)], [second(seconds / 2)]
    b.append(second(seconds / 2))
    a.append(first(seconds / 2))
    return a, b


def passes(host: str, port: int) -> tuple[float, float]:
    """The server's count of generation passes and of the requests drawn in them, from /metrics."""
    text = urllib.request.urlopen(f"http://{host}:{port}/metrics").read().decode()
    values = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("wavenet_names_requests_per_pass_")
    )
    return float(values["wavenet_names_requests_per_pass_count"]), float(values["wavenet_names_requests_per_pass_sum"])


def in_process(requests_per_pass: int, names: int):
    """The server's own model thread with no HTTP and no JSON: passes of `requests_per_pass` requests
    of `names` names, each made from its request, drawn, scored and answered as the server does.
    Returns a load: run(seconds) gives the same outcome as load()."""
    from wavenet_names.server import NameServer, SampleRequest

    server = NameServer([CHECKPOINT])
    request = SampleRequest(n=names)
    gc.freeze()  # as `serve` does once it has loaded its model: full collections skip what lives for good

    def run(seconds: float) -> dict:
        latencies, start = [], time.perf_counter()
        while time.perf_counter() - start < seconds:
            began = time.perf_counter()
            jobs = [server.job(request) for _ in range(requests_per_pass)]
            answers = server.scheduler.step(jobs)
            assert all(len(answers[job]["names"]) == names for job in jobs)
            latencies += [time.perf_counter() - began] * requests_per_pass
        return {"latencies": latencies, "refused": 0, "seconds": time.perf_counter() - start}

    run(0.5)  # warm
    return run


def compare(clients: list[int], seconds: float, names: int) -> list[dict]:
    """Both servers at each client count, interleaved, after a warm-up of each; at the most
    clients, the batched server against its own passes in-process, interleaved too."""
    rows = []
    with server("--no-batching") as alone, server() as batched:
        for address in (alone, batched):
            load(*address, 8, 1.0, names)  # warm: first passes, allocations
        for count in clients:
            before = passes(*batched)
            a, b = interleaved(
                lambda t, count=count: load(*alone, count, t, names),
                lambda t, count=count: load(*batched, count, t, names),
                seconds,
            )
            (passes_before, requests_before), (passes_after, requests_after) = before, passes(*batched)
            per_pass = (requests_after - requests_before) / max(passes_after - passes_before, 1)
            rows.append(
                {
                    "clients": count,
                    "requests per pass": per_pass,
                    "one at a time": summary(a, names),
                    "batched": summary(b, names),
                }
            )
        top = rows[-1]
        alone_in_process = in_process(max(1, round(top["requests per pass"])), names)
        served, measured = interleaved(lambda t: load(*batched, top["clients"], t, names), alone_in_process, seconds)
    top["served"], top["in-process"] = summary(served, names), summary(measured, names)
    return rows


def crowd(clients: int, seconds: float, names: int) -> dict:
    """`clients` clients against a server with its default --max-queue (64): 200s and 429s."""
    with server() as address:
        load(*address, 8, 1.0, names)
        return summary([load(*address, clients, seconds, names)], names)


def post(host: str, port: int, body: dict) -> tuple[float, dict]:
    """One request on a connection of its own: seconds, and the answer."""
    request = urllib.request.Request(
        f"http://{host}:{port}/api/sample", json.dumps(body).encode(), {"content-type": "application/json"}
    )
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:
        answer = json.loads(response.read())
    return time.perf_counter() - start, answer


def beside_a_rare_request(plain: int = 20) -> str:
    """A request for 1,000 names ending in "zzq" (none is likely), and, a second after it, `plain`
    requests for one name, one after another: how long each waited, and how the rare one ended."""
    with server() as address:
        rare = []
        drawing = threading.Thread(target=lambda: rare.append(post(*address, {"n": 1000, "ends_with": "zzq"})))
        drawing.start()
        time.sleep(1.0)
        waits = [post(*address, {"n": 1})[0] for _ in range(plain)]
        drawing.join()
    seconds, answer = rare[0]
    return (
        f"beside a rare request: {plain} requests for one name took {1000 * statistics.median(waits):.0f} ms "
        f"(the slowest {1000 * max(waits):.0f} ms); the rare one took {seconds:.1f} s: {answer['message']}\n"
    )


def table(rows: list[dict], names: int) -> str:
    lines = [
        "| clients | one at a time names/s | batched names/s | ratio | one at a time p50 / p99 ms "
        "| batched p50 / p99 ms | requests per pass |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        a, b = r["one at a time"], r["batched"]
        lines.append(
            f"| {r['clients']} | {a['names_per_second']:,.0f} | {b['names_per_second']:,.0f} | "
            f"{b['names_per_second'] / a['names_per_second']:.1f}x | {a['p50_ms']:.1f} / {a['p99_ms']:.1f} | "
            f"{b['p50_ms']:.1f} / {b['p99_ms']:.1f} | {r['requests per pass']:.1f} |"
        )
    top = rows[-1]
    served, alone = top["served"]["names_per_second"], top["in-process"]["names_per_second"]
    return (
        f"Requests of {names} names, each client on one connection.\n\n"
        + "\n".join(lines)
        + f"\n\nAt {top['clients']} clients the server gave {served:,.0f} names/s; in-process, with no HTTP, the "
        f"same requests, {round(top['requests per pass'])} a pass, gave {alone:,.0f}: the server gives "
        f"{served / alone:.2f} of it.\n"
    )


def crowd_line(clients: int, result: dict) -> str:
    return (
        f"{clients} clients, --max-queue 64: {result['requests']:,} answered (p50 / p99 {result['p50_ms']:.1f} / "
        f"{result['p99_ms']:.1f} ms), {result['refused']:,} refused with 429\n"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--seconds", type=float, default=5.0, help="of load per server and client count")
    parser.add_argument("--names", type=int, default=8, help="per request")
    parser.add_argument("--crowd", type=int, default=256, help="clients against the bounded queue (0: none)")
    parser.add_argument("--rare", action="store_true", help="then requests for one name beside a rare one")
    args = parser.parse_args()
    print(table(compare(args.clients, args.seconds, args.names), args.names), end="")
    if args.crowd:
        print(crowd_line(args.crowd, crowd(args.crowd, args.seconds, args.names)), end="")
    if args.rare:
        print(beside_a_rare_request(), end="")
