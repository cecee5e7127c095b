"""``WS /v1/stream``: binary frames in, one JSON result per processed frame out.

Two tasks per connection: one receives frames and keeps only the newest (the one it replaces is
dropped and counted), the other takes the newest frame, at most ``max_fps`` times a second, runs it
through the connection's own tracker and smoother on a job thread and sends its result. A frame
that cannot be read gets an error message and the stream goes on.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from fer_runtime.errors import InputError
from fer_runtime.serve.engine import Engine, ServiceError, Stream
from fer_runtime.serve.limits import ServeConfig, token_ok

POLICY_VIOLATION, TOO_BIG, TRY_AGAIN_LATER = 1008, 1009, 1013


def _error(kind: str, message: str) -> str:
    return json.dumps({"error": {"type": kind, "message": message}})


class _Latest:
    """The newest frame not yet taken (index, time, bytes), and an event set when one arrives."""

    def __init__(self) -> None:
        self.frame: tuple[int, float, bytes] | None = None
        self.ready = asyncio.Event()


def offered_token(websocket: WebSocket) -> tuple[str | None, str | None]:
    """The token a client offers, and the subprotocol to answer with: ``Authorization: Bearer TOKEN``,
    or (browsers cannot set headers) the subprotocols ``bearer, TOKEN``, answered with ``bearer``."""
    scheme, _, given = websocket.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return given.strip(), None
    offered = [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",")]
    if len(offered) == 2 and offered[0] == "bearer":
        return offered[1], "bearer"
    return None, None


async def serve_stream(websocket: WebSocket, engine: Engine, config: ServeConfig) -> None:
    start, code = time.perf_counter(), 1000
    given, subprotocol = offered_token(websocket)
    if config.token is not None and not token_ok(given, config.token):
        engine.metrics.observe("/v1/stream", "WS", POLICY_VIOLATION, 0.0)
        return await websocket.close(POLICY_VIOLATION, "a valid 'Authorization: Bearer TOKEN' header is required")
    await websocket.accept(subprotocol)
    if engine.streams >= config.max_streams:
        await websocket.send_text(_error("busy", f"{config.max_streams} streams are open already; retry later"))
        code = TRY_AGAIN_LATER
        await websocket.close(code)
    else:
        engine.streams += 1
        engine.metrics.streams.set(engine.streams)
        try:
            code = await _run(websocket, engine, config)
        finally:
            engine.streams -= 1
            engine.metrics.streams.set(engine.streams)
    engine.metrics.observe("/v1/stream", "WS", code, time.perf_counter() - start)


async def _run(websocket: WebSocket, engine: Engine, config: ServeConfig) -> int:
    stream, latest = engine.stream(), _Latest()
    worker = asyncio.create_task(_process(websocket, engine, config, stream, latest))
    try:
        return await _receive(websocket, engine, config, stream, latest)
    finally:
        worker.cancel()  # not awaited: the connection's end must not wait on it (a job in progress finishes alone)


async def _receive(websocket: WebSocket, engine: Engine, config: ServeConfig, stream: Stream, latest: _Latest) -> int:
    """Take messages until the client leaves (or breaks a limit); the close code."""
    while True:
        try:
            message = await asyncio.wait_for(websocket.receive(), config.ws_idle_s)
        except asyncio.TimeoutError:  # TimeoutError from 3.11 on
            await websocket.close(1000, f"no frame for {config.ws_idle_s:g} s")
            return 1000
        if message["type"] == "websocket.disconnect":
            return int(message.get("code", 1000))
        data = message.get("bytes")
        if data is None:
            await websocket.send_text(_error("unsupported_media_type", "send frames as binary JPEG or PNG messages"))
            continue
        if len(data) > config.max_ws_message_bytes:
            await websocket.send_text(_error("payload_too_large", f"a frame is limited to "
                                             f"{config.max_ws_message_bytes:,} bytes"))
            await websocket.close(TOO_BIG)
            return TOO_BIG
        index, time_s = stream.arrived()
        if latest.frame is not None:
            stream.dropped += 1
            engine.metrics.frames.labels("dropped").inc()
        latest.frame = (index, time_s, data)
        latest.ready.set()


async def _process(websocket: WebSocket, engine: Engine, config: ServeConfig, stream: Stream, latest: _Latest) -> None:
    interval = 1.0 / config.max_fps
    while True:
        await latest.ready.wait()
        latest.ready.clear()
        if latest.frame is None:
            continue
        began = time.monotonic()
        (index, time_s, data), latest.frame = latest.frame, None
        reply = await _step(engine, config, stream, index, time_s, data)
        if reply is not None:
            try:
                await websocket.send_text(reply)
            except (WebSocketDisconnect, RuntimeError):
                return
        await asyncio.sleep(max(0.0, interval - (time.monotonic() - began)))


async def _step(engine: Engine, config: ServeConfig, stream: Stream, index: int, time_s: float, data: bytes) -> Any:
    """The message for one frame: its result, an error, or None when the queue had no room (dropped)."""
    try:
        result = await engine.run(stream.step, index, time_s, data, config.max_pixels)
    except ServiceError as exc:
        if exc.kind == "busy":
            stream.dropped += 1
            engine.metrics.frames.labels("dropped").inc()
            return None
        return _error(exc.kind, exc.message)
    except InputError as exc:
        engine.metrics.frames.labels("error").inc()
        return _error("invalid_image", str(exc).removeprefix("image bytes: "))
    engine.metrics.frames.labels("processed").inc()
    return json.dumps(result.to_dict())
