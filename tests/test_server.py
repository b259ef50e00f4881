"""wavenet-names serve: the JSON API in-process (FastAPI's TestClient), batching, bad requests that
leave the server serving, and, over a real socket, a server process under load and its page in a
real browser."""

import asyncio
import contextlib
import json
import logging
import os
import select
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from wavenet_names import shipped
from wavenet_names.choosing import SampleConfig
from wavenet_names.cli import main
from wavenet_names.constraints import Constraints
from wavenet_names.options import option_fields
from wavenet_names.scheduler import SCORE_CHUNK, groups
from wavenet_names.server import MAX_BODY, MAX_NAMES, NameServer, SampleRequest, SampleResponse, create_app
from wavenet_names.serving import ServeConfig

import helpers

BY_DECADE = shipped.path_of("names-by-decade")


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app([BY_DECADE])) as client:  # (with: the app's batching task runs)
        yield client


@pytest.fixture(scope="module")
def plain():
    with TestClient(create_app([shipped.path_of("names")])) as client:
        yield client


def names(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [entry["name"] for entry in response.json()["names"]]


def test_health_model_and_openapi(client):
    assert client.get("/api/health").json() == {"status": "ok"}
    model = client.get("/api/model").json()
    assert model["kind"] == "conv" and model["max_names"] == MAX_NAMES
    assert model["model"] == "the shipped model names-by-decade"
    assert model["val"] == shipped.record()["names-by-decade"]["val_loss"]  # what the page says of it
    assert model["labels"]["sex"] == ["F", "M"] and "1920" in model["labels"]["decade"]
    schema = client.get("/openapi.json").json()
    assert {"/api/sample", "/api/score", "/api/health", "/api/model"} <= set(schema["paths"])
    body = schema["paths"]["/api/sample"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    fields = schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]["properties"]
    options = {f.name: f for cls in (SampleConfig, Constraints) for f in option_fields(cls)}
    assert set(fields) == set(options) - {"cut_at"} | {"labels", "exclude"}  # every option of sample, as sample's
    assert fields["ends_with"]["description"] == options["ends_with"].metadata["help"]
    page = client.get("/")
    assert page.status_code == 200 and "<form" in page.text and "api/sample" in page.text


def test_a_seeded_request_gets_the_names_sample_prints(plain, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no out/model.pt: sample reads the shipped names model, as the server does
    assert main(["sample", "-n", "12", "--seed", "3", "--ends-with", "a"]) == 0
    printed = capsys.readouterr().out.splitlines()
    response = plain.post("/api/sample", json={"n": 12, "seed": 3, "ends_with": "a"})
    served = response.json()["names"]
    assert [f"{e['name']} {e['mark']}".strip() for e in served] == printed
    assert response.json()["complete"] is True


def test_the_names_meet_the_constraints_and_carry_their_losses(client):
    body = {"n": 30, "min_len": 4, "max_len": 7, "ends_with": "ie", "unique": True, "labels": {"sex": "F"}}
    response = client.post("/api/sample", json=body)
    got = names(response)
    assert response.json()["labels"] == {"sex": "F"}
    assert len(got) == len(set(got)) == 30 and all(4 <= len(n) <= 7 and n.endswith("ie") for n in got)
    scored = client.post("/api/score", json={"items": got, "labels": {"sex": "F"}}).json()["scores"]
    losses = [entry["loss"] for entry in response.json()["names"]]
    assert losses == pytest.approx([entry["loss"] for entry in scored], abs=1e-4)


def test_a_constraint_too_rare_returns_what_it_found_and_why(client):
    response = client.post("/api/sample", json={"n": 5, "ends_with": "qxq", "tries": 300})
    assert response.status_code == 200
    result = response.json()
    assert result["complete"] is False and "in 300 tries" in result["message"]


@pytest.mark.parametrize(
    "body, problem",
    [
        ({"labels": {"sex": "X"}}, "labels sex=X: 'X' is not a value of sex"),  # the API's field, not --label
        ({"labels": {"colour": "red"}}, "'colour' is not a label of this model"),
        ({"n": MAX_NAMES + 1}, f"n must be at most {MAX_NAMES}"),
        ({"n": 0}, "n must be at least 1"),
        ({"temperature": 0}, "temperature must be greater than 0"),
        ({"prefix": "a1"}, "'1'"),
        ({"prefix": "a" * 70}, "prefix has 70 characters, past the 64 where a name is cut"),
        ({"min_len": 5, "max_len": 4}, "leave no length"),
        ({"colour": "red"}, "colour: Extra inputs are not permitted"),
        ({"n": "5"}, "n: Input should be a valid integer"),  # strict: a string is not a count
        ({"n": True}, "n: Input should be a valid integer"),  # nor is true
        ({"n": 5.0}, "n: Input should be a valid integer"),
        ({"temperature": True}, "temperature: Input should be a valid number"),
        ({"labels": {"sex": 1}}, "labels.sex: Input should be a valid string"),
    ],
)
def test_a_bad_request_is_a_4xx_with_a_message_and_the_server_keeps_serving(client, body, problem):
    response = client.post("/api/sample", json=body)
    assert response.status_code == 422 and problem in response.json()["detail"], response.text
    assert len(names(client.post("/api/sample", json={"n": 3}))) == 3


@pytest.mark.parametrize(
    "raw, status, problem",
    [
        (b'{"temperature": NaN}', 422, "temperature"),
        (b'{"n": 3', 422, "JSON"),
        (b"[1, 2]", 422, "body"),
        (b'{"exclude": ["' + b"a" * MAX_BODY + b'"]}', 413, "over 1,048,576 bytes"),
    ],
)
def test_bad_bodies_are_a_4xx_with_a_message(client, raw, status, problem):
    response = client.post("/api/sample", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == status and problem in response.json()["detail"], response.text
    assert len(names(client.post("/api/sample", json={"n": 3}))) == 3


def test_score_takes_what_score_takes_and_refuses_an_unknown_character(plain):
    scores = plain.post("/api/score", json={"items": ["anna", "zzzzqx"]}).json()["scores"]
    assert scores[0]["item"] == "anna" and scores[0]["loss"] < scores[1]["loss"]
    response = plain.post("/api/score", json={"items": ["anna!"]})
    assert response.status_code == 422 and "'!'" in response.json()["detail"]
    response = plain.post("/api/score", json={"items": "anna"})
    assert response.status_code == 422 and "items: Input should be a valid array" in response.json()["detail"]


def test_a_long_score_request_is_scored_in_chunks_beside_other_work(plain):
    """More items than one pass scores: the same losses as one item at a time, in order."""
    items = ["anna", "bob", "zzzq"] * (SCORE_CHUNK // 2)
    scores = [entry["loss"] for entry in plain.post("/api/score", json={"items": items}).json()["scores"]]
    assert len(scores) == len(items) and scores[:3] == pytest.approx(scores[-3:], abs=1e-5)


def test_live_at_once_and_ready_once_a_pass_has_run():
    app = create_app([BY_DECADE])
    client = TestClient(app)  # (without `with`: the app has not started, and has run no pass)
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 503 and client.get("/readyz").json() == {"status": "starting"}
    with TestClient(app) as started:
        for _ in range(600):
            if started.get("/readyz").status_code == 200:
                break
            time.sleep(0.05)
        assert started.get("/readyz").json() == {"status": "ready"}
        app.state.server.drain()
        response = started.get("/readyz")
        assert response.status_code == 503 and response.json() == {"status": "draining"}
        refused = started.post("/api/sample", json={"n": 2})
        assert refused.status_code == 503 and "stopping" in refused.json()["detail"]
        assert started.get("/livez").status_code == 200


@contextlib.contextmanager
def model_thread_held(client):
    """The server's model thread busy until the block ends, as if in a very long pass."""
    release = threading.Event()
    busy = client.app.state.server.scheduler.executor.submit(release.wait, 60)
    try:
        yield
    finally:
        release.set()
        busy.result(timeout=60)


def in_background(call):
    """call() in a thread: join() gives its result."""
    result = []
    thread = threading.Thread(target=lambda: result.append(call()))
    thread.start()
    return lambda: (thread.join(60), result[0])[1]


def test_health_metrics_and_the_model_never_wait_behind_a_pass():
    with TestClient(create_app([BY_DECADE])) as client:
        with model_thread_held(client):
            waiting = in_background(lambda: client.post("/api/sample", json={"n": 2}))
            for path in ("/livez", "/api/health", "/api/model", "/metrics", "/"):
                assert client.get(path).status_code == 200, path
            assert client.get("/readyz").status_code in (200, 503)  # (503 if the warm-up pass is the one held)
        assert len(names(waiting())) == 2


def test_a_request_over_the_queue_bound_is_refused_at_once_with_retry_after():
    with TestClient(create_app([BY_DECADE], ServeConfig(max_queue=2))) as client:
        with model_thread_held(client):
            held = [in_background(lambda: client.post("/api/sample", json={"n": 1})) for _ in range(2)]
            server = client.app.state.server
            for _ in range(600):
                if server.scheduler.held == 2:
                    break
                time.sleep(0.05)
            refused = client.post("/api/sample", json={"n": 1})
            assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
            assert "holds 2 requests" in refused.json()["detail"]
            assert client.post("/api/score", json={"items": ["anna"]}).status_code == 429
        assert [len(names(done())) for done in held] == [1, 1]
        assert len(names(client.post("/api/sample", json={"n": 1}))) == 1  # room again


def test_each_request_has_an_id_and_a_line_in_the_access_log(client, caplog):
    caplog.set_level(logging.INFO, logger="wavenet_names.access")
    given = client.post("/api/sample", json={"n": 3}, headers={"X-Request-ID": "game-42"})
    made = client.get("/livez")
    bad = client.post("/api/sample", json={"n": 0}, headers={"X-Request-ID": "no spaces allowed"})
    assert given.headers["x-request-id"] == "game-42"
    assert len(made.headers["x-request-id"]) == 32 and bad.headers["x-request-id"] != "no spaces allowed"
    lines = [record.getMessage() for record in caplog.records if record.name == "wavenet_names.access"]
    assert len(lines) == 3
    assert lines[0].startswith("game-42 POST /api/sample 200 ") and lines[0].endswith("ms 3 names")
    assert lines[1].startswith(made.headers["x-request-id"] + " GET /livez 200 ")
    assert f"{bad.headers['x-request-id']} POST /api/sample 422 " in lines[2]


def test_the_access_log_as_json_lines(caplog):
    caplog.set_level(logging.INFO, logger="wavenet_names.access")
    with TestClient(create_app([BY_DECADE], ServeConfig(log_format="json"))) as client:
        client.post("/api/sample", json={"n": 2}, headers={"X-Request-ID": "abc"})
        client.get("/nowhere")
    first, second = (json.loads(r.getMessage()) for r in caplog.records if r.name == "wavenet_names.access")
    assert {k: first[k] for k in ("id", "method", "route", "status", "names")} == {
        "id": "abc",
        "method": "POST",
        "route": "/api/sample",
        "status": 200,
        "names": 2,
    }
    assert first["ms"] > 0 and "time" in first
    assert second["route"] == "other" and second["status"] == 404 and "names" not in second


@pytest.mark.parametrize("origins", [(), ("https://game.example",)])
def test_cross_origin_headers_only_for_the_origins_given(origins):
    with TestClient(create_app([BY_DECADE], ServeConfig(cors_origin=origins))) as client:
        preflight = client.options(
            "/api/sample",
            headers={"Origin": "https://game.example", "Access-Control-Request-Method": "POST"},
        )
        response = client.post("/api/sample", json={"n": 1}, headers={"Origin": "https://game.example"})
        other = client.post("/api/sample", json={"n": 1}, headers={"Origin": "https://elsewhere.example"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in other.headers
    if origins:
        assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == origins[0]
        assert response.headers["access-control-allow-origin"] == origins[0]
        assert "x-request-id" in response.headers["access-control-expose-headers"]
    else:
        assert preflight.status_code == 405 and "access-control-allow-origin" not in response.headers


# a value other than the API's default for each field of a sample request: a field added later must
# be given one here, and is then drawn apart from requests without it unless it is one of SHARED
OTHER_VALUES = {
    "n": 3,
    "temperature": 0.8,
    "top_k": 5,
    "top_p": 0.9,
    "prefix": "a",
    "seed": 3,
    "min_len": 2,
    "max_len": 9,
    "ends_with": "a",
    "new": True,
    "unique": True,
    "tries": 50_000,
    "labels": {"sex": "F"},
    "exclude": ["anna"],
}
# what may differ within one pass, and how each request gets its own: how many names, each row's
# labels, and the constraints that only choose among names drawn alike (max_len does not: it cuts a
# name sooner)
SHARED = {
    "n": lambda response: len(response.names) == 3,
    "labels": lambda response: response.labels == {"sex": "F"},
    "min_len": lambda response: all(len(name.name) >= 2 for name in response.names),
    "ends_with": lambda response: all(name.name.endswith("a") for name in response.names),
    "new": lambda response: all(name.mark == "" for name in response.names),
    "unique": lambda response: len({name.name for name in response.names}) == len(response.names),
    "tries": lambda response: response.complete,
    "exclude": lambda response: "anna" not in {name.name for name in response.names},
}


@pytest.mark.parametrize("field", sorted(OTHER_VALUES))
def test_two_requests_that_differ_in_how_a_name_is_drawn_never_share_a_pass(field):
    """Every field of a sample request, one at a time: two requests that differ in it alone share a
    pass only if each request's own rows or search carry the field; and then each gets its own."""
    assert set(OTHER_VALUES) == set(SampleRequest.model_fields), "give every field of a request a value here"
    server = NameServer([BY_DECADE])
    jobs = [server.job(SampleRequest(n=4)), server.job(SampleRequest(**{"n": 4, field: OTHER_VALUES[field]}))]
    assert len(groups(jobs)) == (1 if field in SHARED else 2)
    if field in SHARED:
        answers = {}
        while len(answers) < 2:
            answers |= server.scheduler.step([job for job in jobs if job not in answers])
        first, second = (SampleResponse(**answers[job]) for job in jobs)
        assert len(first.names) == 4 and first.labels == {} and SHARED[field](second)


# --- over a real socket -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`wavenet-names serve` of the names-by-decade model, with its defaults, in a process of its own."""
    with helpers.served(tmp_path_factory.mktemp("served") / "serve.log") as server:
        yield server.address, server.process


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A server of the names model whose budgets are far over what the tests take (a rare draw goes on
    until its client goes), with a read deadline of 1 s and room for 16 requests."""
    log = tmp_path_factory.mktemp("guarded") / "serve.log"
    flags = ["--max-queue", "16", "--max-draw-seconds", "120", "--max-tries", "100000000", "--read-seconds", "1"]
    with helpers.served(log, *flags, checkpoint="names") as server:
        yield server


def resident_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])


@pytest.mark.slow  # starts the server
def test_a_server_under_64_clients_makes_no_error_and_does_not_grow(served):
    address, process = served
    failures = []

    def client(k: int, rounds: int):
        for i in range(rounds):
            body = {"n": 8, "labels": {"sex": "FM"[k % 2]}}
            if i % 4 == 3:  # a bad one now and then
                body["temperature"] = 0
            status, result = helpers.post(address, "/api/sample", body)
            expected = 422 if i % 4 == 3 else 200
            if status != expected or (status == 200 and len(result["names"]) != 8):
                failures.append((status, result))

    def load(rounds: int):
        threads = [threading.Thread(target=client, args=(k, rounds)) for k in range(64)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in threads), "a client got no answer in 120 s"

    load(4)  # warm: the allocator's pools and the model's buffers reach their size
    before = resident_kib(process.pid)
    load(12)
    after = resident_kib(process.pid)
    assert failures == []
    assert after - before < 16 * 1024, (before, after)  # KiB: no growth beyond the allocator's noise
    assert process.poll() is None


@pytest.mark.slow  # starts the server, and a browser
def test_the_page_in_a_real_browser_gives_names_of_a_chosen_label(served):
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        if os.environ.get("WAVENET_NAMES_BROWSER") == "required":
            pytest.fail("chromium and chromedriver are required here (apt-get install chromium chromium-driver)")
        pytest.skip("no chromium and chromedriver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))
    try:
        address, _ = served
        browser.get(address)
        wait = WebDriverWait(browser, 30)
        select = wait.until(lambda b: b.find_element(By.ID, "label-sex"))
        Select(select).select_by_value("F")
        Select(browser.find_element(By.ID, "label-decade")).select_by_value("1920")
        browser.find_element(By.ID, "n").clear()
        browser.find_element(By.ID, "n").send_keys("12")
        browser.find_element(By.ID, "ends_with").send_keys("a")
        browser.find_element(By.ID, "go").click()
        items = wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#names li.name .text"))
        shown = [item.text for item in items]
        assert len(shown) == 12 and all(text.endswith("a") for text in shown), shown
        assert browser.find_element(By.ID, "error").text == ""
        assert browser.find_element(By.ID, "summary").text == "12 names, sex F, decade 1920"  # the labels drawn with
        val = shipped.record()["names-by-decade"]["val_loss"]
        assert browser.find_element(By.ID, "model").text.startswith("Model: the shipped model names-by-decade (conv, ")
        assert browser.find_element(By.ID, "model").text.endswith(f"parameters, val {val:.4f} nats per character)")
    finally:
        browser.quit()


def metric(server, name: str) -> float:
    """A metric of /metrics without labels."""
    text = helpers.http_get(server.address + "metrics")[1]
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith(name + " "))


def until(condition, what: str, seconds: float = 30):
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(f"{what}: not within {seconds} s")


def received(sock: socket.socket) -> bytes:
    """What a socket receives until the server closes it."""
    parts = []
    try:
        while part := sock.recv(1 << 16):
            parts.append(part)
    except ConnectionResetError:  # closed with data of ours unread: what came before still counts
        pass
    return b"".join(parts)


def request_bytes(path: str, body: dict) -> bytes:
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


@pytest.mark.slow  # starts the server
def test_a_rare_request_holds_no_other_and_stops_when_its_client_goes(guarded):
    """A hostile request: 1,000 names ending in "zzq", tries without bound, took 67 s and held a
    request for one name for 64 s before passes were bounded. Now the one-name requests are answered
    while it draws, and it stops drawing when its client goes (its budget here is two minutes)."""
    rare = socket.create_connection((guarded.host, guarded.port))
    rare.sendall(request_bytes("/api/sample", {"n": 1000, "ends_with": "zzq", "tries": 100_000_000}))
    until(lambda: metric(guarded, "wavenet_names_rejected_draws_total") > 0, "the rare request drawing")
    for _ in range(3):
        status, answer = helpers.post(guarded.address, "/api/sample", {"n": 1})
        assert status == 200 and len(answer["names"]) == 1
    assert helpers.http_get(guarded.address + "readyz")[0] == 200
    assert select.select([rare], [], [], 0)[0] == []  # still drawing: not answered, not closed
    rare.close()
    until(lambda: metric(guarded, "wavenet_names_queue_depth") == 0, "its draw stopped after its client went")
    rejected = metric(guarded, "wavenet_names_rejected_draws_total")
    time.sleep(0.5)
    assert metric(guarded, "wavenet_names_rejected_draws_total") == rejected  # no pass draws for it any more


@pytest.mark.slow  # starts the server
def test_half_sent_requests_are_closed_at_the_read_deadline(guarded):
    """50 half-sent requests held their connections for at least 120 s before reads had a deadline.
    With --read-seconds 1, a head that stops halfway is closed, and a body that stops halfway gets 408."""
    heads = [socket.create_connection((guarded.host, guarded.port)) for _ in range(50)]
    for sock in heads:
        sock.sendall(b"POST /api/sample HTTP/1.1\r\nhost: test\r\ncontent-le")
    body = socket.create_connection((guarded.host, guarded.port))
    body.sendall(request_bytes("/api/sample", {"n": 1, "exclude": ["x" * 100]})[:-50])
    silent = socket.create_connection((guarded.host, guarded.port))  # sends nothing at all
    for sock in [*heads, silent]:
        sock.settimeout(30)
        assert sock.recv(1) == b""  # closed by the server
        sock.close()
    body.settimeout(30)
    assert received(body).startswith(b"HTTP/1.1 408")
    body.close()
    assert helpers.post(guarded.address, "/api/sample", {"n": 1})[0] == 200


@pytest.mark.slow  # starts the server
def test_a_chunked_body_over_the_limit_gets_413_like_one_with_a_length(guarded):
    """5.5 MB sent in chunks got a 400 "error parsing the body" before the body was read whole."""
    sock = socket.create_connection((guarded.host, guarded.port))
    sock.settimeout(30)
    head = b"POST /api/sample HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\n\r\n"
    chunk = b"a" * 65536
    answer = []
    reader = threading.Thread(target=lambda: answer.append(received(sock)))
    reader.start()
    try:
        sock.sendall(head + b'10\r\n{"exclude": ["aa\r\n')
        for _ in range(88):  # 5.5 MB
            sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
    except (BrokenPipeError, ConnectionResetError):  # answered and closed before the rest was sent
        pass
    reader.join(30)
    sock.close()
    assert answer and answer[0].startswith(b"HTTP/1.1 413"), answer
    assert b"over 1,048,576 bytes" in answer[0]


@pytest.mark.slow  # starts the server
def test_256_clients_over_the_queue_bound_get_200s_and_429s_and_memory_stays(guarded):
    """256 clients against room for 16 requests: every answer is a 200 with its names, or a 429 at once
    with Retry-After (which each client then honours); the server's memory does not grow."""
    body = request_bytes("/api/sample", {"n": 8})
    outcomes: dict = {200: 0, 429: 0}
    problems = []

    async def client(rounds: int):
        reader, writer = await asyncio.open_connection(guarded.host, guarded.port)
        try:
            for _ in range(rounds):
                writer.write(body)
                head = await reader.readuntil(b"\r\n\r\n")
                fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line)
                answer = json.loads(await reader.readexactly(int(fields[b"content-length"])))
                status = int(head.split(b" ", 2)[1])
                outcomes[status] = outcomes.get(status, 0) + 1
                if status == 429:
                    await asyncio.sleep(float(fields[b"retry-after"]))
                elif status != 200 or len(answer["names"]) != 8:
                    problems.append((status, answer))
        finally:
            writer.close()

    def crowd(rounds: int):
        async def all_of_them():
            await asyncio.wait_for(asyncio.gather(*(client(rounds) for _ in range(256))), 120)

        asyncio.run(all_of_them())

    crowd(2)  # warm: the allocator's pools reach their size
    before = resident_kib(guarded.process.pid)
    crowd(4)
    after = resident_kib(guarded.process.pid)
    assert problems == [] and set(outcomes) == {200, 429}, outcomes
    assert after - before < 16 * 1024, (before, after)  # KiB


@pytest.mark.slow  # starts the server
@pytest.mark.parametrize(
    "body, problem",
    [({"n": "5"}, "n: Input should be a valid integer"), ({"n": True}, "n: Input should be a valid integer")],
)
def test_fields_are_strict_over_a_socket_too(guarded, body, problem):
    """Before the fields were strict, "5" and true were taken as 5 and 1."""
    status, answer = helpers.post(guarded.address, "/api/sample", body)
    assert status == 422 and problem in answer["detail"]


@pytest.mark.slow  # starts the server
def test_tries_without_bound_are_cut_to_the_servers(served):
    """1,000 names ending in "zzq" with 100,000,000 tries drew until stopped by hand before requests had
    budgets. Now it ends at the server's default bounds, 100,000 tries or 10 s (whichever a machine reaches
    first), with what it found and why."""
    address, _ = served
    status, answer = helpers.post(address, "/api/sample", {"n": 1000, "ends_with": "zzq", "tries": 100_000_000})
    assert status == 200 and answer["complete"] is False
    bounds = ("tries; this server draws at most 100,000 names for one request", "this server draws for at most 10 s")
    assert any(bound in answer["message"] for bound in bounds), answer["message"]
