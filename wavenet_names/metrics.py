"""What `wavenet-names serve` tells Prometheus at /metrics: its requests, their latency, its queue, how
many requests share a pass, the names it made and the draws its constraints threw away.

Each server has its own registry, so that two apps in one process (a test's) count apart."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

OTHER_ROUTE = "other"  # every other path, so that a scan of random paths cannot grow the label set
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
PASS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self):
        self.routes: frozenset[str] = frozenset()  # the app's own paths (create_app's); any other is OTHER_ROUTE
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "wavenet_names_requests", "HTTP requests answered, by route and status", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "wavenet_names_request_seconds",
            "time from a request's head to its answer's end, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "wavenet_names_queue_depth", "requests held: queued for the model or being drawn", registry=r
        )
        self.requests_per_pass = Histogram(
            "wavenet_names_requests_per_pass",
            "sample requests drawn in one generation pass",
            buckets=PASS_BUCKETS,
            registry=r,
        )
        self.names = Counter("wavenet_names_names", "names sent to clients", registry=r)
        self.rejected = Counter(
            "wavenet_names_rejected_draws", "names drawn under constraints that did not meet them", registry=r
        )
        self.refused = Counter(
            "wavenet_names_refused",
            "requests refused before any work: a full queue (429) or a drain (503)",
            ["reason"],
            registry=r,
        )

    def route(self, path: str) -> str:
        """The route label of a request's path."""
        return path if path in self.routes else OTHER_ROUTE

    def exposition(self) -> tuple[bytes, str]:
        """The text that Prometheus scrapes, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
