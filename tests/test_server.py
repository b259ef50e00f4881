"""wavenet-names serve: the JSON API in-process (FastAPI's TestClient), batching, bad requests that
leave the server serving, and, over a real socket, a server process under load and its page in a
real browser."""

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from wavenet_names import shipped
from wavenet_names.cli import main
from wavenet_names.constraints import Constraints
from wavenet_names.options import option_fields
from wavenet_names.sampling import SampleConfig
from wavenet_names.server import MAX_BODY, MAX_NAMES, NameServer, SampleRequest, create_app, listening_socket

from helpers import first_line, waited

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
        ({"min_len": 5, "max_len": 4}, "leave no length"),
        ({"colour": "red"}, "colour: Extra inputs are not permitted"),
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


@pytest.mark.parametrize("window", [0.05, 0.0])  # 0: those already queued still share the pass
def test_requests_that_arrive_together_share_one_generation_pass(window):
    """Eight requests at once, with the same settings and other labels: one pass of their 8 x 4 rows."""
    server = NameServer([BY_DECADE], window=window)
    passes = []
    draw = server.draw
    server.draw = lambda jobs: (passes.append([job.request.sampling.n for job in jobs]), draw(jobs))[1]

    async def together():
        server.queue = asyncio.Queue()
        task = asyncio.create_task(server.batches())
        requests = [SampleRequest(n=4, labels={"sex": "FM"[i % 2]}) for i in range(8)]
        responses = await asyncio.gather(*(server.sample(server.job(r)) for r in requests))
        task.cancel()
        return responses

    responses = asyncio.run(together())
    assert passes == [[4] * 8]
    assert all(len(r.names) == 4 and r.complete for r in responses)


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
    assert len(server.passes(jobs)) == (1 if field in SHARED else 2)
    if field in SHARED:
        first, second = server.serve(jobs)
        assert len(first.names) == 4 and first.labels == {} and SHARED[field](second)


# --- over a real socket -----------------------------------------------------------------------------


def test_the_servers_connections_send_at_once():
    """Nagle's algorithm off (TCP_NODELAY) on every connection that serve's socket accepts: with it on,
    a response's body, written after its head, waits 40 ms for the client's delayed ACK."""
    listener = listening_socket("127.0.0.1", 0)
    accepted = []

    async def accept_one():
        def connected(reader, writer):
            accepted.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(connected, sock=listener)
        _, writer = await asyncio.open_connection(*listener.getsockname())
        while not accepted:
            await asyncio.sleep(0.01)
        writer.close()
        server.close()

    asyncio.run(asyncio.wait_for(accept_one(), 10))
    assert accepted and accepted[0] != 0


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`wavenet-names serve --port 0` in a process of its own: its address, and its process."""
    command = [sys.executable, "-m", "wavenet_names", "serve", "--checkpoint", "names-by-decade", "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = first_line(process)
    assert "serving" in line, process.stderr.read()
    address = line.split(" on ")[1].split()[0]
    yield address, process
    process.terminate()
    waited(process, 30)


def post(address: str, path: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        address + path.lstrip("/"), json.dumps(body).encode(), {"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


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
            status, result = post(address, "/api/sample", body)
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
    finally:
        browser.quit()
