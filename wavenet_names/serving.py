"""The settings of `wavenet-names serve`, each declared once: its flags (arguments.py), its app
(server.py) and its process (hosting.py) read them from here. No FastAPI here: building the command
line's parser must not import it."""

from dataclasses import dataclass

from .options import OptionError, check_at_least, check_choices, option


@dataclass(frozen=True)
class ServeConfig:
    host: str = option(
        "127.0.0.1", "the address to listen on (127.0.0.1: this machine alone; 0.0.0.0: every network interface)"
    )
    port: int = option(8000, "0: a free port, printed when it starts")
    window_ms: float = option(
        5.0,
        "the longest a pass waits for the clients of the last one to send their next requests, so that they share "
        "it (a lone client never waits)",
    )
    no_batching: bool = option(False, "draw for one request at a time, to measure what batching gives")
    max_queue: int = option(
        64,
        "the most requests held at once, queued or being drawn: one more is refused at once with 429 and Retry-After",
    )
    max_tries: int = option(
        100_000, "the most names drawn for one request under constraints; a request's tries above it are cut to it"
    )
    max_draw_seconds: float = option(
        10.0,
        "the longest one request is drawn for; then it is answered with the names found, and why there are no more",
    )
    read_seconds: float = option(10.0, "the longest a request's head, and then its body, may take to arrive")
    drain_seconds: float = option(
        10.0,
        "on SIGTERM or Ctrl-C: stop listening, answer the requests held, and exit within this many seconds, "
        "a long draw cut short with the names it found",
    )
    cors_origin: tuple[str, ...] = option(
        (),
        "let the pages of this origin (https://game.example) call the API from a browser; repeat for more "
        "(default: none, and no CORS headers)",
        repeatable=True,
        metavar="ORIGIN",
        show_default=False,
    )
    log_format: str = option(
        "text",
        "one line per request on stderr: text, json (an object per line), or none",
        choices=("text", "json", "none"),
    )

    def __post_init__(self):
        if not 0 <= self.port < 65536:
            raise OptionError("port", f"must be in 0..65535, got {self.port}")
        check_at_least(self, 1, "max_queue", "max_tries")
        check_choices(self)
        if not 0 <= self.window_ms < float("inf"):
            raise OptionError("window_ms", f"must be a number of milliseconds, not negative, got {self.window_ms}")
        for name in ("max_draw_seconds", "read_seconds", "drain_seconds"):
            if not 0 < getattr(self, name) < float("inf"):
                raise OptionError(name, f"must be a positive number of seconds, got {getattr(self, name)}")
        object.__setattr__(self, "cors_origin", tuple(self.cors_origin))
