"""A real fer-serve process on a free loopback port: HTTP and WebSocket round trips, the token,
the refusal to bind without one, SIGTERM with requests in flight, kill -9 and restart, and hostile
clients (oversized and truncated bodies, garbage frames, too many connections and streams, slow
bodies). Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fer_bench.serve import clip_jpegs, free_port, load, post, start_serve, stop
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

pytestmark = pytest.mark.slow  # server processes: the full tier

PHOTO = (Path(__file__).parent / "data" / "photos" / "astronaut.jpg").read_bytes()
TOKEN = "process-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# After a graceful shutdown the server ends by the signal it got (as the default handler would).
STOPPED = (0, -signal.SIGTERM)
LIMITS = ["--max-connections", "6", "--body-timeout", "1", "--max-streams", "1", "--max-body-bytes", "2000000"]


def request(port: int, method: str = "POST", path: str = "/v1/faces", body: bytes = PHOTO,
            headers: dict | None = None, timeout: float = 30) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body if method == "POST" else None,
                     headers={"Content-Type": "image/jpeg", **(headers or {})})
        answer = conn.getresponse()
        text = answer.read()
        return answer.status, json.loads(text) if answer.getheader("content-type", "").startswith("application/json") \
            else {"text": text.decode(errors="replace")}
    finally:
        conn.close()


@pytest.fixture(scope="module")
def server():
    port = free_port()
    proc = start_serve(LIMITS, port, env={"FER_SERVE_TOKEN": TOKEN})
    yield port
    assert stop(proc) in STOPPED


def test_http_round_trip_and_the_token(server):
    status, body = request(server, headers=AUTH)
    assert status == 200 and len(body["faces"]) == 1 and body["faces"][0]["label"] == "Happy"
    assert request(server)[0] == 401
    assert request(server, headers={"Authorization": "Bearer not-the-token-000000"})[0] == 401
    assert request(server, "GET", "/healthz") == (200, {"status": "ok"})
    assert request(server, "GET", "/v1/models", headers=AUTH)[1]["models"][0]["labels"][3] == "Happy"


def test_websocket_round_trip_garbage_frames_and_the_stream_limit(server):
    with pytest.raises(InvalidStatus):
        connect(f"ws://127.0.0.1:{server}/v1/stream").close()
    with connect(f"ws://127.0.0.1:{server}/v1/stream", additional_headers=AUTH) as ws:
        for garbage in (os.urandom(2000), b"\xff\xd8\xff\xe0" + os.urandom(500), b""):
            ws.send(garbage)
            assert json.loads(ws.recv(timeout=30))["error"]["type"] == "invalid_image"
        ws.send(PHOTO)
        result = json.loads(ws.recv(timeout=30))
        assert result["faces"][0]["track"] == 1 and result["size"] == [240, 244]
        with connect(f"ws://127.0.0.1:{server}/v1/stream", subprotocols=["bearer", TOKEN]) as second:  # as browsers
            assert second.subprotocol == "bearer"  # authorized, then refused: --max-streams 1
            assert json.loads(second.recv(timeout=10))["error"]["type"] == "busy"
            with pytest.raises(ConnectionClosed) as closed:
                second.recv(timeout=10)
            assert closed.value.rcvd.code == 1013
        ws.send(b"\0" * (4 * 2**20))  # over the message limit: the server closes the connection
        with pytest.raises(ConnectionClosed):
            for _ in range(3):
                ws.recv(timeout=10)


def test_oversized_and_truncated_bodies(server):
    assert request(server, body=b"\0" * 2_000_001, headers=AUTH)[1]["error"]["type"] == "payload_too_large"
    with socket.create_connection(("127.0.0.1", server), timeout=10) as s:  # promises 10,000 bytes, sends 100
        s.sendall(b"POST /v1/faces HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nAuthorization: Bearer "
                  + TOKEN.encode() + b"\r\nContent-Length: 10000\r\n\r\n" + PHOTO[:100])
        s.shutdown(socket.SHUT_WR)
        s.recv(1000)
    assert request(server, headers=AUTH)[0] == 200  # the server goes on


def test_slow_and_too_many_clients_are_bounded(server):
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", server), timeout=10) as s:  # a body trickling in
        s.sendall(b"POST /v1/faces HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nAuthorization: Bearer "
                  + TOKEN.encode() + b"\r\nContent-Length: 5000\r\n\r\n")
        answer = b""
        for _ in range(20):
            s.sendall(b"\0")
            time.sleep(0.2)
            s.setblocking(False)
            try:
                answer = s.recv(1000)
            except BlockingIOError:
                pass
            s.setblocking(True)
            if answer:
                break
    assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - start < 4  # --body-timeout 1
    idle = [socket.create_connection(("127.0.0.1", server), timeout=10) for _ in range(6)]  # --max-connections 6
    try:
        time.sleep(0.2)
        assert request(server, "GET", "/healthz")[0] == 503
    finally:
        for s in idle:
            s.close()
    time.sleep(0.3)
    assert request(server, "GET", "/healthz")[0] == 200


def test_refuses_to_listen_beyond_loopback_without_a_token():
    env = {k: v for k, v in os.environ.items() if k != "FER_SERVE_TOKEN"}
    done = subprocess.run([sys.executable, "-m", "fer_runtime.serve.cli", "--host", "0.0.0.0", "--port",
                           str(free_port())], capture_output=True, text=True, timeout=60, env=env, check=False)
    assert done.returncode == 2 and "without a token" in done.stderr and "--insecure" in done.stderr


def test_sigterm_lets_requests_in_flight_finish_and_refuses_new_ones():
    port = free_port()
    proc = start_serve(["--jobs", "1"], port)
    statuses: list[int] = []
    big = _upscaled(4)
    clients = [threading.Thread(target=lambda: statuses.append(request(port, body=big)[0])) for _ in range(8)]
    for t in clients:
        t.start()
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    for t in clients:
        t.join(60)
    assert statuses == [200] * 8
    assert stop(proc) in STOPPED


def test_kill_9_and_restart_answers_again():
    port = free_port()
    proc = start_serve([], port)
    assert request(port)[0] == 200
    assert stop(proc, signal.SIGKILL) == -signal.SIGKILL
    again = start_serve([], port)
    try:
        assert request(port)[0] == 200
    finally:
        assert stop(again) in STOPPED


def test_a_short_load_gives_only_answers_and_the_queues_503s():
    """Seconds of load on 127.0.0.1 (the measured runs are fer-bench serve): 8 clients fit 2 jobs and a
    queue of 6; 24 at once do not, and those turned away get the typed 503."""
    port = free_port()
    proc = start_serve(["--jobs", "2", "--queue", "6"], port)
    try:
        jpeg = clip_jpegs(1)[0]
        assert load(port, post("/v1/faces", jpeg), 8, 48)["statuses"] == {200: 48}
        answers: list[tuple[int, dict]] = []
        slow = _upscaled(3)  # slower requests: the first eight are still in hand when the rest arrive
        crowd = [threading.Thread(target=lambda: answers.append(request(port, body=slow))) for _ in range(24)]
        for t in crowd:
            t.start()
        for t in crowd:
            t.join(60)
        statuses = {status for status, _ in answers}
        assert len(answers) == 24 and statuses == {200, 503}
        assert all(body["error"]["type"] == "busy" for status, body in answers if status == 503)
    finally:
        assert stop(proc) in STOPPED


def _upscaled(factor: int) -> bytes:
    """The photo enlarged (a slower request: more pixels to decode and detect)."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(PHOTO))
    buf = io.BytesIO()
    image.resize((image.width * factor, image.height * factor)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()
