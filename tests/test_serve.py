"""fer-serve in process: the endpoints and their answers (the result model's own dicts), the token,
limits and typed errors, the WebSocket stream, the queue, micro-batching, the settings' safety
rules, and schemathesis against the OpenAPI document (bounded examples).

A real fer-serve process (signals, kill -9, slow and hostile clients) is tests/test_serve_process.py.
"""

from __future__ import annotations

import asyncio
import io
import threading
from pathlib import Path

import numpy as np
import pytest
import schemathesis
from fastapi.testclient import TestClient
from fer_bench.reliability import jpeg_declaring, png_bomb, png_declaring
from hypothesis import HealthCheck, settings
from PIL import Image
from starlette.websockets import WebSocketDisconnect

from fer_runtime import EmotionRecognizer, load_image
from fer_runtime.bundled import BUNDLED_MODELS, DEFAULT_MODEL
from fer_runtime.errors import ConfigError
from fer_runtime.serve.app import create_app
from fer_runtime.serve.batching import MicroBatcher
from fer_runtime.serve.engine import Engine, ServiceError
from fer_runtime.serve.limits import ServeConfig, is_loopback, jobs_per_worker
from fer_runtime.serve.metrics import Metrics

PHOTOS = Path(__file__).parent / "data" / "photos"
TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JPEG = {"content-type": "image/jpeg", **AUTH}
CONFIG = ServeConfig(token=TOKEN, max_body_bytes=2_000_000, max_pixels=4_000_000, max_crops=4,
                     max_ws_message_bytes=300_000, max_fps=1000)


def photo(name: str = "astronaut.jpg") -> bytes:
    return (PHOTOS / name).read_bytes()


@pytest.fixture(scope="module")
def app():
    return create_app(CONFIG)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def reference(app) -> EmotionRecognizer:
    """A recognizer with the service's own model file (on a CPU without VNNI the variant is timed per
    thread count: the service's choice, not a second one)."""
    return EmotionRecognizer(app.state.engine.recognizer.info.source.removeprefix("bundled:"), precision="named")


def error_of(response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["type"] == kind and body["error"]["message"]
    return body["error"]["message"]


# --- images ------------------------------------------------------------------------------------


def test_faces_are_the_result_models_dicts(client, reference):
    answer = client.post("/v1/faces", content=photo(), headers=JPEG)
    assert answer.status_code == 200
    body = answer.json()
    expected = [f.to_dict() for f in reference.detect(load_image(photo()))]
    assert body["faces"] == expected and len(expected) == 1 and body["faces"][0]["label"] == "Happy"
    assert body["image"] == {"width": 244, "height": 240} and body["model"] == DEFAULT_MODEL and body["ms"] > 0


def test_multipart_gives_the_same_answer_as_a_raw_body(client):
    raw = client.post("/v1/faces", content=photo(), headers=JPEG).json()
    multi = client.post("/v1/faces", files={"file": ("a.jpg", photo(), "image/jpeg")}, headers=AUTH).json()
    assert multi["faces"] == raw["faces"]


def test_detector_settings_are_query_parameters_within_bounds(client):
    strict = client.post("/v1/faces?score_threshold=0.99", content=photo(), headers=JPEG).json()
    assert strict["faces"] == []
    one = client.post("/v1/faces?max_faces=1&min_face=30&max_size=320", content=photo("coffee.jpg"), headers=JPEG)
    assert one.status_code == 200 and len(one.json()["faces"]) <= 1
    for query in ("score_threshold=0.01", "max_size=5000", "max_faces=0", "min_face=abc"):
        error_of(client.post(f"/v1/faces?{query}", content=photo(), headers=JPEG), 422, "invalid_request")


def test_crops_give_one_prediction_each_in_order(client, reference):
    faces = [np.asarray(Image.open(PHOTOS / "astronaut.jpg").crop((78, 68, 168, 177))),
             np.asarray(Image.open(PHOTOS / "grace_hopper.jpg").convert("L").resize((60, 70)))]
    encoded = []
    for face in faces:
        buf = io.BytesIO()
        Image.fromarray(face).save(buf, format="PNG")
        encoded.append(buf.getvalue())
    answer = client.post("/v1/crops", files=[("file", (f"{i}.png", b, "image/png")) for i, b in enumerate(encoded)],
                         headers=AUTH)
    assert answer.status_code == 200
    assert answer.json()["predictions"] == [p.to_dict() for p in reference.predict(faces)]
    single = client.post("/v1/crops", content=encoded[1], headers={"content-type": "image/png", **AUTH}).json()
    assert single["predictions"] == answer.json()["predictions"][1:]
    too_many = [("file", ("x.png", encoded[0], "image/png"))] * (CONFIG.max_crops + 1)
    error_of(client.post("/v1/crops", files=too_many, headers=AUTH), 413, "payload_too_large")


def test_models_reports_the_metadata_and_the_sha256(client):
    body = client.get("/v1/models", headers=AUTH).json()
    (model,) = body["models"]
    loaded = DEFAULT_MODEL + ("-int8" if model["precision"] == "int8" else "")  # the variant chosen for this CPU
    assert model["name"] == DEFAULT_MODEL and model["sha256"] == BUNDLED_MODELS[loaded].sha256
    assert model["precision_reason"]
    assert model["labels"][3] == "Happy" and 0.6 < model["accuracy"] < 0.8 and model["version"]
    assert body["limits"]["max_pixels"] == CONFIG.max_pixels


# --- the token, limits, typed errors -------------------------------------------------------------


@pytest.mark.parametrize("method,path", [("post", "/v1/faces"), ("post", "/v1/crops"), ("get", "/v1/models"),
                                         ("get", "/metrics"), ("get", "/openapi.json")])
def test_every_endpoint_but_health_needs_the_token(client, method, path):
    for headers in ({}, {"Authorization": "Bearer wrong-token-000000000"}, {"Authorization": f"Basic {TOKEN}"}):
        answer = getattr(client, method)(path, headers={"content-type": "image/jpeg", **headers})
        error_of(answer, 401, "unauthorized")
        assert answer.headers["www-authenticate"] == "Bearer"
    assert client.get("/healthz").json() == {"status": "ok"} and client.get("/readyz").json() == {"status": "ready"}


def test_without_a_token_the_endpoints_are_open():
    with TestClient(create_app(ServeConfig())) as open_client:
        assert open_client.post("/v1/faces", content=photo(), headers={"content-type": "image/jpeg"}).status_code == 200


def test_bodies_types_and_pixels_are_limited_with_typed_errors(client):
    error_of(client.post("/v1/faces", content=b"x" * (CONFIG.max_body_bytes + 1), headers=JPEG), 413,
             "payload_too_large")
    chunked = client.post("/v1/faces", content=iter([b"x" * 1_000_000] * 3), headers=JPEG)  # no Content-Length
    error_of(chunked, 413, "payload_too_large")
    error_of(client.post("/v1/faces", content=b"hello", headers={**AUTH, "content-type": "text/plain"}), 415,
             "unsupported_media_type")
    error_of(client.post("/v1/faces", content=photo(), headers=AUTH), 415, "unsupported_media_type")
    for bomb in (png_declaring(100_000, 100_000), jpeg_declaring(9000, 9000), png_bomb(3000, 3000)):
        assert "limit" in error_of(client.post("/v1/faces", content=bomb, headers=JPEG), 413, "too_many_pixels")
    for broken in (photo()[: len(photo()) // 2], b"", b"\xff\xd8\xff" + bytes(100)):
        error_of(client.post("/v1/faces", content=broken, headers=JPEG), 422, "invalid_image")
    error_of(client.post("/v1/faces", files={"other": ("a.jpg", photo(), "image/jpeg")}, headers=AUTH), 422,
             "invalid_request")
    error_of(client.get("/v1/nothing", headers=AUTH), 404, "not_found")


def test_cors_is_off_unless_origins_are_named(client):
    asked = {"Origin": "https://app.example", **AUTH}
    assert "access-control-allow-origin" not in client.get("/v1/models", headers=asked).headers
    config = ServeConfig(cors_origins=("https://app.example",))
    with TestClient(create_app(config)) as cors:
        assert cors.get("/v1/models", headers=asked).headers["access-control-allow-origin"] == "https://app.example"
        other = cors.get("/v1/models", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_metrics_count_requests_errors_faces_batches_and_the_queue(client):
    client.post("/v1/faces", content=photo(), headers=JPEG)
    client.post("/v1/faces", content=b"junk", headers=JPEG)
    text = client.get("/metrics", headers=AUTH).text
    assert 'fer_requests_total{endpoint="/v1/faces",method="POST",status="200"}' in text
    assert 'fer_errors_total{endpoint="/v1/faces",type="invalid_image"}' in text
    for name in ("fer_request_seconds_bucket", "fer_faces_per_image_count", "fer_batch_faces_bucket",
                 "fer_queue_depth", "fer_jobs_running", "fer_streams"):
        assert name in text


# --- the stream ------------------------------------------------------------------------------------


def frames(n: int) -> list[bytes]:
    out = []
    image = Image.open(PHOTOS / "astronaut.jpg").convert("RGB")
    for i in range(n):
        buf = io.BytesIO()
        canvas = Image.new("RGB", (480, 360), (90, 90, 90))
        canvas.paste(image, (20 + 4 * i, 40))
        canvas.save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def test_stream_tracks_faces_per_connection_and_survives_garbage(client):
    with client.websocket_connect("/v1/stream", headers=AUTH) as ws:
        results = []
        for i, data in enumerate(frames(4)):
            if i == 2:
                ws.send_bytes(b"\x89PNG garbage")
                ws.send_text("a text message")  # answered by the receiver, maybe before the garbage frame's error
                errors = {ws.receive_json()["error"]["type"] for _ in range(2)}
                assert errors == {"invalid_image", "unsupported_media_type"}
            ws.send_bytes(data)
            results.append(ws.receive_json())
    assert [r["dropped"] for r in results] == [0, 0, 0, 0] and [r["size"] for r in results] == [[360, 480]] * 4
    tracks = {face["track"] for r in results for face in r["faces"]}
    assert tracks == {1} and all(r["faces"][0]["raw"]["label"] for r in results)
    assert results[0]["frame"] == 0 and results[-1]["frame"] > results[0]["frame"]
    with client.websocket_connect("/v1/stream", headers=AUTH) as ws:  # a new connection: a new tracker
        ws.send_bytes(frames(1)[0])
        assert ws.receive_json()["faces"][0]["track"] == 1


def test_stream_limits_message_size_and_needs_the_token(client):
    with client.websocket_connect("/v1/stream", headers=AUTH) as ws:
        ws.send_bytes(b"\0" * (CONFIG.max_ws_message_bytes + 1))
        assert ws.receive_json()["error"]["type"] == "payload_too_large"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1009
    with pytest.raises(WebSocketDisconnect) as refused:
        with client.websocket_connect("/v1/stream") as ws:
            ws.receive_json()
    assert refused.value.code == 1008


def test_stream_drops_to_the_latest_frame_when_the_client_is_faster(client):
    """Frames sent in a burst: fewer results than frames, and ``dropped`` counts the rest."""
    burst = frames(1) * 12
    with client.websocket_connect("/v1/stream", headers=AUTH) as ws:
        for data in burst:
            ws.send_bytes(data)
        results = [ws.receive_json()]
        while results[-1]["frame"] < len(burst) - 1:
            results.append(ws.receive_json())
    last = results[-1]
    assert last["frame"] == len(burst) - 1 and len(results) + last["dropped"] == len(burst)


# --- the queue, time limits, micro-batching, settings -----------------------------------------------


def test_a_full_queue_answers_503_with_retry_after_and_slow_work_504(reference):
    engine = Engine(ServeConfig(jobs=1, queue=1, request_timeout_s=0.3), Metrics(), reference)
    engine.open()
    release = threading.Event()

    async def scenario() -> list:
        slow = [asyncio.ensure_future(engine.run(release.wait, 5)) for _ in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(ServiceError) as busy:
            await engine.run(release.wait, 5)
        outcomes = await asyncio.gather(*slow, return_exceptions=True)
        assert engine.admitted == 2  # timed-out jobs keep their places until they really end
        release.set()
        while engine.admitted:
            await asyncio.sleep(0.01)
        return [busy.value, *outcomes]

    busy, *timed_out = asyncio.run(scenario())
    assert busy.status == 503 and busy.headers["Retry-After"] == "1"
    assert all(isinstance(e, ServiceError) and e.status == 504 for e in timed_out)
    engine.close()


def test_micro_batching_shares_calls_and_hands_each_its_own_predictions(reference):
    seen, gate = [], threading.Event()

    class Slow:
        def classify(self, crops, order):
            seen.append(len(crops))
            gate.wait(5)
            return reference.classify(crops, order)

    batcher = MicroBatcher(Slow(), max_batch=32, max_wait_ms=50, busy=lambda: 4)
    crops = [np.full((48, 48), v, np.uint8) for v in (10, 80, 150, 220)]
    answers: dict[int, list] = {}
    callers = [threading.Thread(target=lambda i=i: answers.__setitem__(i, batcher.classify([crops[i]], "rgb")))
               for i in range(4)]
    for t in callers:
        t.start()
    gate.set()
    for t in callers:
        t.join(10)
    batcher.close()
    assert sum(seen) == 4 and max(seen) > 1  # at least two calls shared one classifier call
    for i in range(4):
        assert answers[i] == reference.classify([crops[i]], "rgb")


def test_batching_service_gives_the_same_answers(reference):
    with TestClient(create_app(ServeConfig(batch_size=16, jobs=2))) as batched:
        body = batched.post("/v1/faces", content=photo(), headers={"content-type": "image/jpeg"}).json()
    assert body["faces"] == [f.to_dict() for f in reference.detect(load_image(photo()))]


def test_settings_refuse_an_exposed_bind_without_a_token():
    with pytest.raises(ConfigError, match="without a token"):
        ServeConfig(host="0.0.0.0")
    ServeConfig(host="0.0.0.0", token=TOKEN)
    ServeConfig(host="0.0.0.0", insecure=True)
    with pytest.raises(ConfigError, match="16 characters"):
        ServeConfig(token="short")
    with pytest.raises(ConfigError):
        ServeConfig(detector={"score_threshold": 0.01})
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.3.2.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("example.org")
    assert jobs_per_worker(ServeConfig(), cores=8) == 8 and jobs_per_worker(ServeConfig(workers=2, threads=2), 8) == 2
    assert jobs_per_worker(ServeConfig(workers=4), cores=2) == 1 and ServeConfig.from_json(CONFIG.to_json()) == CONFIG


# --- the OpenAPI document ----------------------------------------------------------------------------


def test_openapi_describes_every_endpoint_with_examples(client):
    spec = client.get("/openapi.json", headers=AUTH).json()
    assert set(spec["paths"]) == {"/v1/faces", "/v1/crops", "/v1/models", "/healthz", "/readyz", "/metrics"}
    assert "/v1/stream" in spec["info"]["description"] and "FrameOut" in spec["components"]["schemas"]
    assert spec["components"]["schemas"]["FaceOut"]["properties"]["label"]["examples"] == ["Happy"]
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(CONFIG), headers=AUTH)


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_schemathesis_no_server_errors_and_answers_match_the_document(case):
    # Random bytes are never a valid image, so "schema-valid data is accepted" cannot hold for image bodies.
    case.call_and_validate(headers=AUTH, excluded_checks=[schemathesis.checks.positive_data_acceptance])


def test_the_command_without_its_extra_says_which_to_install(monkeypatch, capsys):
    from fer_runtime.serve import cli

    monkeypatch.setattr(cli, "SERVE_MODULES", (*cli.SERVE_MODULES, "a_module_that_is_not_installed"))
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    message = capsys.readouterr().err.strip()
    assert stopped.value.code == 2 and message.startswith("error: fer-serve needs a_module_that_is_not_installed")
    assert message.endswith("pip install 'fer-edge[serve]'") and "\n" not in message
