"""The process of `wavenet-names serve`: its socket, uvicorn with a deadline on each request's head,
an access log on stderr, and a drain on SIGTERM or Ctrl-C.

The drain: stop listening, answer every request held (a long draw cut short, with the names it
found), and exit 0 within --drain-seconds. Kubernetes sends SIGTERM and waits 30 s by default before
it kills. A second signal exits at once.
"""

import gc
import logging
import socket
import sys
from types import FrameType

import uvicorn
from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string

from . import middleware
from .serving import ServeConfig

GRACE_SHARE_OF_DRAIN = 0.9  # uvicorn waits this share of --drain-seconds for connections, then cuts them


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


def with_head_deadline(seconds: float, protocol: str = "auto"):
    """uvicorn's HTTP protocol (httptools if installed, else h11), closing a connection whose next
    request's head has not all arrived `seconds` after the connection opened or its first byte came.
    uvicorn itself closes only connections idle between requests (its keep-alive timeout): a client
    that sends half a head, or nothing, would hold its connection for good. (The body's deadline is
    middleware.Bodies'.) `protocol`: uvicorn's name of the one to extend."""
    base = import_from_string(HTTP_PROTOCOLS[protocol])

    class HeadDeadline(base):
        head_timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self.head_timer = self.loop.call_later(seconds, self.head_late)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if not self.reading_head():
                self.cancel_head_timer()
            elif self.head_timer is None:  # the first bytes of the next request's head
                self.head_timer = self.loop.call_later(seconds, self.head_late)

        def connection_lost(self, exc) -> None:
            self.cancel_head_timer()
            super().connection_lost(exc)

        def reading_head(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def head_late(self) -> None:
            self.head_timer = None
            if self.reading_head() and not self.transport.is_closing():
                self.transport.close()

        def cancel_head_timer(self) -> None:
            if self.head_timer is not None:
                self.head_timer.cancel()
                self.head_timer = None

    return HeadDeadline


class DrainingServer(uvicorn.Server):
    """uvicorn's server, which on the first SIGTERM or SIGINT starts the app's drain (`drain`) and
    exits 0 once it is done, where uvicorn raises the signal again when it has shut down (and so
    exits by it, not with 0); a second signal exits at once."""

    def __init__(self, config: uvicorn.Config, drain):
        super().__init__(config)
        self.drain = drain

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:
            self.force_exit = True
        else:
            self.should_exit = True
            self.drain()


def access_log(log_format: str) -> None:
    """One line per request on stderr (middleware.Access writes them), as `log_format` says."""
    log = middleware.log
    log.handlers.clear()
    log.propagate = False
    if log_format == "none":
        log.setLevel(logging.WARNING)
        return
    handler = logging.StreamHandler(sys.stderr)
    text = "%(message)s" if log_format == "json" else "%(asctime)s %(message)s"
    handler.setFormatter(logging.Formatter(text))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


def run(app, listener: socket.socket, config: ServeConfig) -> None:
    """Serve `app` (server.create_app's) on `listener` until a signal, then drain it."""
    access_log(config.log_format)
    # Everything made so far (the model, its data, the app) lives as long as the process: out of the
    # collector's sight, a full collection scans only what requests make. Without it, one took 100 ms
    # every second at 64 clients, and held every request in flight.
    gc.freeze()
    server = DrainingServer(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,  # (middleware.Access logs each request, with its id)
            http=with_head_deadline(config.read_seconds),
            timeout_graceful_shutdown=GRACE_SHARE_OF_DRAIN * config.drain_seconds,
        ),
        app.state.server.drain,
    )
    server.run(sockets=[listener])
