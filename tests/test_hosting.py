"""The process of `wavenet-names serve` (hosting.py): its socket, and its drain on SIGTERM and Ctrl-C."""

import asyncio
import http.client
import json
import signal
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
import uvicorn

from wavenet_names.hosting import listening_socket, with_head_deadline

import helpers


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


DRAIN_SECONDS = 3.0
JSON = {"content-type": "application/json"}


def outcome(address: str, body: dict) -> str:
    """One request's end, as a client sees it: "200" with every name, "503", "refused" (nothing was
    listening, or the connection closed before any byte of an answer), or what went wrong."""
    request = urllib.request.Request(
        address + "api/sample", json.dumps(body).encode(), {"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())  # a response cut off mid-way fails here
            return "200" if len(answer["names"]) == body["n"] else f"200 with {len(answer['names'])} names"
    except urllib.error.HTTPError as e:
        return str(e.code)
    except (ConnectionRefusedError, ConnectionResetError, http.client.RemoteDisconnected):
        return "refused"
    except urllib.error.URLError as e:
        return "refused" if isinstance(e.reason, (ConnectionRefusedError, ConnectionResetError)) else repr(e)
    except Exception as e:  # an answer cut off, or any other surprise: the test fails with it
        return repr(e)


@pytest.mark.slow  # starts the server, and stops it
def test_sigterm_under_load_answers_what_it_holds_and_exits_0_in_time(tmp_path):
    """64 clients, and a draw that would go on for minutes; then SIGTERM. Every request gets a whole
    200, a 503, or no connection; the long draw is answered with what it found; the process exits 0
    within --drain-seconds."""
    flags = ["--drain-seconds", str(DRAIN_SECONDS), "--max-draw-seconds", "300", "--max-tries", "100000000"]
    flags += ["--max-queue", "100"]  # (room for every client)
    with helpers.served(tmp_path / "serve.log", *flags, checkpoint="names") as server:
        long = []
        drawing = threading.Thread(
            target=lambda: long.append(
                helpers.post(server.address, "api/sample", {"n": 1000, "ends_with": "zzq", "tries": 10**8}, 120)
            )
        )
        drawing.start()
        outcomes: list[str] = []
        stop = threading.Event()

        def client():
            while not stop.is_set():
                end = outcome(server.address, {"n": 8})
                outcomes.append(end)
                if end == "refused":
                    return

        clients = [threading.Thread(target=client) for _ in range(64)]
        for thread in clients:
            thread.start()
        time.sleep(2.0)  # under load
        answered_before = outcomes.count("200")
        server.process.send_signal(signal.SIGTERM)
        status = helpers.waited(server.process, DRAIN_SECONDS + 5)
        stop.set()
        for thread in [*clients, drawing]:
            thread.join(60)
    assert status == 0
    assert answered_before > 0 and set(outcomes) <= {"200", "503", "refused"}, sorted(set(outcomes))
    ((code, answer),) = long
    assert code == 200 and answer["complete"] is False and "the server is stopping" in answer["message"]


@pytest.mark.slow  # starts the server, and stops it
def test_ctrl_c_stops_an_idle_server_with_status_0(tmp_path):
    with helpers.served(tmp_path / "serve.log") as server:
        server.process.send_signal(signal.SIGINT)
        assert helpers.waited(server.process, DRAIN_SECONDS + 10) == 0
    assert "Traceback" not in server.log.read_text()


@pytest.mark.parametrize("protocol", ["h11", "httptools"])
def test_a_head_that_stops_halfway_is_closed_at_its_deadline_and_a_whole_one_is_answered(protocol):
    """uvicorn in a thread, with either of its HTTP protocols and a head deadline of 0.3 s: half a
    head, or nothing at all, and the connection is closed; a whole request is answered, and its
    kept-alive connection still takes the next one after the deadline has passed."""

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    listener = listening_socket("127.0.0.1", 0)
    config = uvicorn.Config(app, log_level="warning", http=with_head_deadline(0.3, protocol), lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]})
    thread.start()
    try:
        while not server.started:
            time.sleep(0.01)
        address = listener.getsockname()
        half, silent, whole = (socket.create_connection(address, timeout=10) for _ in range(3))
        half.sendall(b"GET / HTTP/1.1\r\nhost: te")
        whole.sendall(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
        assert whole.recv(1024).startswith(b"HTTP/1.1 200")
        assert half.recv(1) == b"" and silent.recv(1) == b""  # closed by the server
        whole.sendall(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")  # (its keep-alive lasts 5 s)
        assert whole.recv(1024).startswith(b"HTTP/1.1 200")
        for sock in (half, silent, whole):
            sock.close()
    finally:
        server.should_exit = True
        thread.join(10)
