"""The HTTP and WebSocket service: FastAPI over :class:`~fer_runtime.serve.engine.Engine`.

``create_app(config)`` builds one worker's app; ``app_from_env()`` is the factory the server
calls in each worker process (the settings travel in ``$FER_SERVE_CONFIG``). Every answer is
written by the result model's ``to_dict()``; every error is ``{"error": {"type", "message"}}``.
"""

# No "from __future__ import annotations": FastAPI reads the routes' annotations, some of which
# name objects local to the functions that define them.
import asyncio
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email import policy
from email.parser import BytesParser
from typing import Annotated, Any, Optional

from fastapi import Depends, FastAPI, Query, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from fer_runtime.errors import ConfigError, InputError
from fer_runtime.serve import schemas
from fer_runtime.serve.engine import Engine, ServiceError
from fer_runtime.serve.limits import CONFIG_ENV, DETECTOR_BOUNDS, ServeConfig, token_ok
from fer_runtime.serve.metrics import Metrics
from fer_runtime.serve.stream import serve_stream

log = logging.getLogger(__name__)

ENDPOINTS = ("/v1/faces", "/v1/crops", "/v1/stream", "/v1/models", "/healthz", "/readyz", "/metrics", "/openapi.json")
HTTP_KINDS = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
              408: "timeout", 413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid_request"}
ERRORS = {code: {"model": schemas.ErrorOut, "description": kind.replace("_", " ")} for code, kind in
          {401: "unauthorized", 413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid_request",
           503: "busy", 504: "timeout"}.items()}
_IMAGE = {"schema": {"type": "string", "format": "binary"}}


def image_body(what: str, many: bool) -> dict[str, Any]:
    """The request body of an image endpoint: an image as the body, or multipart ``file`` part(s)."""
    part = {"type": "string", "format": "binary"}
    files = {"type": "array", "items": part, "minItems": 1} if many else part
    multipart = {"schema": {"type": "object", "properties": {"file": files}, "required": ["file"]},
                 "encoding": {"file": {"contentType": "image/jpeg, image/png"}}}
    return {"requestBody": {"required": True, "description": what,
                            "content": {"image/jpeg": _IMAGE, "image/png": _IMAGE, "multipart/form-data": multipart}}}


def error_response(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message}}, status, headers=headers)


def endpoint_of(path: str) -> str:
    """The metrics label for a path: one of :data:`ENDPOINTS`, or "other" (bounded label values)."""
    return path if path in ENDPOINTS else "other"


class MetricsMiddleware:
    """Counts and times every HTTP request by endpoint, method and status (plain ASGI: no per-request task)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500

        async def sent(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            self.metrics.observe(endpoint_of(scope["path"]), scope["method"], status, time.perf_counter() - start)


# --- requests' bodies ------------------------------------------------------------------------------


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The body, in memory, refused past ``limit`` bytes (413) or ``timeout_s`` seconds (408)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ServiceError(413, "payload_too_large", f"the body is over the limit of {limit:,} bytes")
    chunks: list[bytes] = []

    async def gather() -> None:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ServiceError(413, "payload_too_large", f"the body is over the limit of {limit:,} bytes")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(gather(), timeout_s)
    except asyncio.TimeoutError:  # TimeoutError from 3.11 on
        raise ServiceError(408, "timeout", f"the body did not arrive within {timeout_s:g} s") from None
    except ClientDisconnect:
        raise ServiceError(400, "bad_request", "the client closed the connection before the body ended") from None
    return b"".join(chunks)


def media_type(request: Request) -> str:
    """The request's content type, checked: an image type or multipart/form-data, else 415."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind.startswith("image/") or kind == "multipart/form-data":
        return kind
    raise ServiceError(415, "unsupported_media_type", f"send an image (image/jpeg, image/png...) as the body, or "
                       f"multipart/form-data with 'file' parts; got {kind or 'no content type'!r}")


def images_in(body: bytes, content_type: str, kind: str, max_files: int) -> list[bytes]:
    """The encoded images of a body: the whole body for an image type, each ``file`` part of a multipart one."""
    if kind != "multipart/form-data":
        return [body]
    message = BytesParser(policy=policy.HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1", "replace")
                                                         + b"\r\n\r\n" + body)
    parts = [p for p in message.iter_parts() if p.get_param("name", header="content-disposition") == "file"] \
        if message.is_multipart() else []
    if not parts:
        raise ServiceError(422, "invalid_request", "multipart/form-data needs at least one part named 'file'")
    if len(parts) > max_files:
        raise ServiceError(413, "payload_too_large", f"{len(parts)} files is over the limit of {max_files}")
    return [p.get_payload(decode=True) or b"" for p in parts]


def decode_error(exc: InputError) -> ServiceError:
    """An unreadable or oversized image: 413 when it is over the pixel limit (a decompression bomb), else 422."""
    text = str(exc)
    if "over the limit" in text or "decompression bomb" in text:
        return ServiceError(413, "too_many_pixels", text.removeprefix("image bytes: "))
    return ServiceError(422, "invalid_image", text.removeprefix("image bytes: "))


# --- the app ---------------------------------------------------------------------------------------


def create_app(config: ServeConfig, engine: Engine | None = None) -> FastAPI:
    """One worker's app: its engine (models loaded now), routes, error handlers, metrics, CORS."""
    metrics = engine.metrics if engine is not None else Metrics()
    engine = engine or Engine(config, metrics)
    models = model_info(config, engine)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        engine.open()
        yield
        await asyncio.get_running_loop().run_in_executor(None, engine.close)

    app = FastAPI(title="fer-serve", version=models["runtime_version"], lifespan=lifespan, openapi_url=None,
                  docs_url=None, redoc_url=None, description=DESCRIPTION)
    app.state.engine, app.state.config = engine, config
    add_error_handlers(app, metrics)
    add_routes(app, config, engine, models)
    document_stream(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    return app


def app_from_env() -> FastAPI:
    """The factory each worker process runs (``uvicorn --factory``): settings from ``$FER_SERVE_CONFIG``."""
    text = os.environ.get(CONFIG_ENV)
    if not text:
        raise ConfigError(f"${CONFIG_ENV} is not set; start the service with fer-serve")
    return create_app(ServeConfig.from_json(text))


def add_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    def answer(request: Any, status: int, kind: str, message: str, headers: dict | None = None) -> JSONResponse:
        metrics.error(endpoint_of(request.url.path), kind)
        return error_response(status, kind, message, headers)

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return answer(request, exc.status, exc.kind, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        return answer(request, 422, "invalid_request", problems)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return answer(request, exc.status_code, HTTP_KINDS.get(exc.status_code, "error"), str(exc.detail),
                      getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s: %s", endpoint_of(request.url.path), type(exc).__name__)
        return answer(request, 500, "internal", "internal error")


def document_stream(app: FastAPI) -> None:
    """Add the stream's message shapes (FrameOut, ErrorOut) to the OpenAPI components: OpenAPI has no
    WebSocket operations, so ``WS /v1/stream`` is described in the document's description."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = generate()
            for model in (schemas.FrameOut, schemas.ErrorOut):
                found = model.model_json_schema(ref_template="#/components/schemas/{model}")
                spec["components"]["schemas"].update({**found.pop("$defs", {}), model.__name__: found})
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def auth_dependency(token: str | None) -> Any:
    bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer TOKEN (when the service has a token)")

    async def check(credentials: Annotated[Optional[HTTPAuthorizationCredentials], Depends(bearer)]) -> None:
        if token is not None and not token_ok(credentials.credentials if credentials else None, token):
            raise ServiceError(401, "unauthorized", "a valid 'Authorization: Bearer TOKEN' header is required",
                               {"WWW-Authenticate": "Bearer"})

    return Depends(check)


def model_info(config: ServeConfig, engine: Engine) -> dict[str, Any]:
    """What ``GET /v1/models`` says: the model's labels, version, sha256 and accuracy, from its metadata."""
    from fer_runtime import __version__
    from fer_runtime.bundled import DEFAULT_MODEL, checkout_hint, model_registry, read_bundled
    from fer_runtime.session import read_model_bytes

    info = engine.recognizer.info
    # The file the recognizer loaded: for a name, the variant its precision setting chose.
    loaded = info.source.removeprefix("bundled:") if info.source.startswith("bundled:") else config.model
    data, _ = read_model_bytes(loaded, model_registry(config.models_dir), DEFAULT_MODEL,
                               lambda name: read_bundled(name, config.models_dir), checkout_hint)
    meta = info.metadata
    accuracy = meta.metrics.get("test_accuracy")
    name = config.model or DEFAULT_MODEL
    det = engine.pipeline.detector
    return {"models": [{"name": os.path.basename(name), "labels": list(meta.labels),
                        "version": meta.extra.get("package_version"), "sha256": hashlib.sha256(data).hexdigest(),
                        "accuracy": accuracy if isinstance(accuracy, (int, float)) else None,
                        "file": os.path.basename(str(loaded or DEFAULT_MODEL)), "precision": meta.precision,
                        "precision_reason": info.precision_reason, "arch": meta.arch}],
            "runtime_version": __version__,
            "detector": {n: getattr(det, n) for n in ("score_threshold", "nms_threshold", "min_face", "max_size")},
            "limits": {n: getattr(config, n) for n in ("max_body_bytes", "max_pixels", "max_crops", "max_faces",
                                                       "max_ws_message_bytes", "max_fps", "max_streams")}}


def _bound(name: str, what: str) -> Any:
    low, high = DETECTOR_BOUNDS[name]
    return Query(ge=low, le=high, description=f"{what} ({low}..{high}; default: the service's)")


def add_routes(app: FastAPI, config: ServeConfig, engine: Engine, models: dict[str, Any]) -> None:
    auth = auth_dependency(config.token)
    add_image_routes(app, config, engine, auth, models["models"][0]["name"])
    add_service_routes(app, engine, auth, models)

    @app.websocket("/v1/stream")
    async def stream(websocket: WebSocket) -> None:
        await serve_stream(websocket, engine, config)


def add_image_routes(app: FastAPI, config: ServeConfig, engine: Engine, auth: Any, model_name: str) -> None:
    async def payload(request: Request, max_files: int) -> list[bytes]:
        kind = media_type(request)
        body = await read_body(request, config.max_body_bytes, config.body_timeout_s)
        return images_in(body, request.headers.get("content-type", ""), kind, max_files)

    async def work(fn: Any, *args: Any) -> Any:
        try:
            return await engine.run(fn, *args)
        except InputError as exc:
            raise decode_error(exc) from None

    @app.post("/v1/faces", dependencies=[auth], tags=["images"], openapi_extra=image_body(
        "One image: the raw body with an image content type, or multipart/form-data with one 'file' part.", many=False),
        responses={200: {"model": schemas.FacesOut}, **ERRORS})
    async def faces(request: Request,
                    score_threshold: Annotated[Optional[float], _bound("score_threshold", "least detector score")] = None,
                    nms_threshold: Annotated[Optional[float], _bound("nms_threshold", "overlap above which the weaker box goes")] = None,
                    min_face: Annotated[Optional[int], _bound("min_face", "smallest face width in pixels")] = None,
                    max_size: Annotated[Optional[int], _bound("max_size", "longer side detection works at")] = None,
                    max_faces: Annotated[Optional[int], _bound("max_faces", "faces classified, best scores first")] = None,
                    ) -> JSONResponse:
        """The faces in one image, best detector score first: box, detector score, landmarks, label,
        confidence and the seven probabilities, with the image's size, the model and the milliseconds spent."""
        images = await payload(request, 1)
        settings = {k: v for k, v in {"score_threshold": score_threshold, "nms_threshold": nms_threshold,
                                      "min_face": min_face, "max_size": max_size}.items() if v is not None}
        start = time.perf_counter()
        (height, width), found = await work(engine.faces, images[0], settings, max_faces or config.max_faces)
        return JSONResponse({"model": model_name, "image": {"width": width, "height": height},
                             "ms": round((time.perf_counter() - start) * 1000, 3),
                             "faces": [face.to_dict() for face in found]})

    @app.post("/v1/crops", dependencies=[auth], tags=["images"], openapi_extra=image_body(
        "Face crops: one as the raw body with an image content type, or several as multipart 'file' parts.", many=True),
        responses={200: {"model": schemas.CropsOut}, **ERRORS})
    async def crops(request: Request) -> JSONResponse:
        """One prediction per face crop (an image that is already a face), in the order sent, classified in one batch."""
        images = await payload(request, config.max_crops)
        start = time.perf_counter()
        predictions = await work(engine.crops, images)
        return JSONResponse({"model": model_name, "ms": round((time.perf_counter() - start) * 1000, 3),
                             "predictions": [p.to_dict() for p in predictions]})


def add_service_routes(app: FastAPI, engine: Engine, auth: Any, models: dict[str, Any]) -> None:
    @app.get("/v1/models", dependencies=[auth], tags=["service"], response_model=schemas.ModelsOut,
             responses={401: ERRORS[401]})
    async def list_models() -> JSONResponse:
        """The model this service runs (labels, version, sha256, PublicTest accuracy), its detector defaults and limits."""
        return JSONResponse(models)

    @app.get("/healthz", tags=["service"], response_model=schemas.StatusOut)
    async def healthz() -> JSONResponse:
        """Liveness: the process answers (no token needed)."""
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", tags=["service"], response_model=schemas.StatusOut, responses={503: ERRORS[503]})
    async def readyz() -> JSONResponse:
        """Readiness: the models are loaded and the service is not shutting down (no token needed)."""
        if engine.draining:
            raise ServiceError(503, "shutting_down", "the service is shutting down")
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", dependencies=[auth], tags=["service"], responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format"},
        401: ERRORS[401]})
    async def metrics_text() -> Response:
        """Prometheus metrics: requests and errors by endpoint and status, latency, faces, batch sizes, queue depth."""
        return Response(engine.metrics.render(), media_type=engine.metrics.content_type)

    @app.get("/openapi.json", dependencies=[auth], include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())


DESCRIPTION = """Facial expression recognition over HTTP and WebSocket.

* `POST /v1/faces`: one image -> its faces (box, detector score, landmarks, label, confidence, probabilities).
* `POST /v1/crops`: face crops -> one prediction each.
* `WS /v1/stream`: binary JPEG/PNG frames in, one JSON text message per processed frame out
  (`FrameOut`: faces with track ids and smoothed labels). When frames come faster than they are
  processed, only the newest waits; `dropped` counts the others. A frame that cannot be read gets
  an `ErrorOut` message and the stream goes on. Message size and frame rate are limited
  (`GET /v1/models` lists the limits); an oversized message closes the connection with code 1009,
  too many streams with 1013, a missing token with 1008. Browsers, which cannot set headers on a
  WebSocket, offer the token as the subprotocols `bearer, TOKEN`.

When the service has a token, every endpoint but `/healthz` and `/readyz` needs
`Authorization: Bearer TOKEN`. Errors are `{"error": {"type": ..., "message": ...}}`; a full queue
answers 503 with `Retry-After`.
"""
