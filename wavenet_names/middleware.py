"""What `wavenet-names serve` does around every request, as ASGI middleware: an id, a line in the
access log and the request metrics (Access); a body read whole, within a size and a time (Bodies).
"""

import asyncio
import json
import logging
import re
import time
import uuid
from datetime import datetime, timezone

from .metrics import Metrics

log = logging.getLogger("wavenet_names.access")  # (hosting.access_log gives it its handler)

REQUEST_ID = b"x-request-id"
GOOD_ID = re.compile(rb"[\x21-\x7e]{1,128}")  # printable ASCII without spaces: safe to echo and to log


class Access:
    """Gives each request an id (the client's X-Request-ID if it sent a sane one, else a new one),
    sends it back as X-Request-ID, counts the request and its latency by route and status, and logs
    one line: the id, method, route, status, milliseconds and, for /api/sample, the names sent (set
    by the route as scope["state"]["names"])."""

    def __init__(self, app, metrics: Metrics, json_lines: bool = False):
        self.app, self.metrics, self.json_lines = app, metrics, json_lines

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        given = next((value for name, value in scope["headers"] if name == REQUEST_ID), None)
        request_id = given if given is not None and GOOD_ID.fullmatch(given) else uuid.uuid4().hex.encode()
        status = 500  # if the app fails before it answers

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (REQUEST_ID, request_id)]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            route = self.metrics.route(scope["path"])
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(seconds)
            if log.isEnabledFor(logging.INFO):
                names = scope.get("state", {}).get("names")
                log.info(self.line(request_id.decode(), scope["method"], route, status, 1000 * seconds, names))

    def line(self, request_id: str, method: str, route: str, status: int, ms: float, names: int | None) -> str:
        if self.json_lines:
            now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
            fields = {
                "time": now,
                "id": request_id,
                "method": method,
                "route": route,
                "status": status,
                "ms": round(ms, 1),
            }
            return json.dumps(fields | ({} if names is None else {"names": names}))
        return f"{request_id} {method} {route} {status} {ms:.1f}ms" + ("" if names is None else f" {names} names")


class Bodies:
    """Reads a request's body whole before the app sees it: over `limit` bytes, 413, whether it
    declared its length or came in chunks; not all there within `seconds`, 408. The app then reads
    it as one message, and waits on the same receive() as before for the client to go away."""

    def __init__(self, app, limit: int, seconds: float):
        self.app, self.limit, self.seconds = app, limit, seconds

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        declared = next((value for name, value in scope["headers"] if name == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _refuse(send, 413, f"the request body is over {self.limit:,} bytes")
        try:
            body = await asyncio.wait_for(self.read(receive), self.seconds)
        except asyncio.TimeoutError:  # (TimeoutError itself from Python 3.11)
            return await _refuse(send, 408, f"the request body did not arrive within {self.seconds:g} s")
        except _TooLarge:
            return await _refuse(send, 413, f"the request body is over {self.limit:,} bytes")
        if body is None:  # the client went away while sending it
            return None
        sent = False

        async def replayed():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replayed, send)

    async def read(self, receive) -> bytes | None:
        parts, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            parts.append(message.get("body", b""))
            size += len(parts[-1])
            if size > self.limit:
                raise _TooLarge
            if not message.get("more_body", False):
                return b"".join(parts)


class _TooLarge(Exception):
    pass


async def _refuse(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status in (408, 413):  # the rest of the body is not read: the connection cannot carry another request
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
