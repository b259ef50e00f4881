"""What /metrics says (metrics.py), scraped after known traffic: requests by route and status, their
latency, passes, names, the draws a constraint threw away, and the queue."""

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from wavenet_names import shipped
from wavenet_names.draws import NameRequest, draw
from wavenet_names.loading import LoadedModel
from wavenet_names.server import create_app

NAMES = shipped.path_of("names")
SEEDED = {"n": 3, "ends_with": "a", "seed": 1}


def scraped(client) -> dict:
    """{(sample name, labels as a sorted tuple): value} of /metrics."""
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def seeded_draws() -> tuple[int, int]:
    """The draws of SEEDED, as the library makes them: how many passes, and how many names thrown away."""
    loaded = LoadedModel.load([NAMES])
    request = NameRequest.of(loaded, SEEDED)
    search = request.search(loaded, request.sampling.batch_size)
    take, counted = search.take, []
    search.take = lambda names: (counted.append(len(names)), take(names))[1]
    assert len(list(draw(loaded, request, search))) == 3
    return len(counted), search.drawn - 3


def test_the_metrics_count_known_traffic():
    passes, rejected = seeded_draws()
    with TestClient(create_app([NAMES])) as client:
        for _ in range(3):
            assert client.post("/api/sample", json={"n": 2}).status_code == 200  # one at a time: a pass each
        assert client.post("/api/sample", json={"n": 0}).status_code == 422
        assert client.post("/api/sample", json=SEEDED).status_code == 200
        assert client.post("/api/score", json={"items": ["anna", "bob"]}).status_code == 200
        assert client.get("/livez").status_code == 200
        client.get("/no/such/page")
        metrics = scraped(client)

    def requests(route, status):
        return metrics.get(("wavenet_names_requests_total", (("route", route), ("status", status))), 0)

    assert requests("/api/sample", "200") == 4 and requests("/api/sample", "422") == 1
    assert requests("/api/score", "200") == 1 and requests("/livez", "200") == 1
    assert requests("other", "404") == 1
    assert metrics[("wavenet_names_request_seconds_count", (("route", "/api/sample"),))] == 5
    assert metrics[("wavenet_names_request_seconds_bucket", (("le", "+Inf"), ("route", "/api/sample")))] == 5
    assert metrics[("wavenet_names_names_total", ())] == 3 * 2 + 3
    assert metrics[("wavenet_names_rejected_draws_total", ())] == rejected > 0
    assert metrics[("wavenet_names_requests_per_pass_count", ())] == 3 + passes
    assert metrics[("wavenet_names_requests_per_pass_sum", ())] == 3 + passes
    assert metrics[("wavenet_names_queue_depth", ())] == 0


def test_a_route_label_is_one_of_the_apps_routes_or_other():
    metrics = create_app([NAMES]).state.server.metrics
    assert metrics.route("/api/sample") == "/api/sample" and metrics.route("/docs") == "/docs"
    assert metrics.route("/readyz") == "/readyz" and metrics.route("/wp-admin/setup.php") == "other"
