"""``fer-serve``: run the service (``pip install 'fer-edge[serve]'``; docs/SERVE.md).

Binds 127.0.0.1 by default. Another address needs a token (``--token`` or ``$FER_SERVE_TOKEN``),
or ``--insecure`` to say the network is trusted. ``--workers N`` starts N processes; each runs
cores / (N x threads) jobs at once (``--jobs``), each job's models on ``--threads`` threads (1).
"""

# No "from __future__ import annotations": typer reads the annotations of the command defined in
# _build_app, where typer is imported lazily.
import os
import sys
from typing import Annotated, Any, Optional

from fer_runtime.cli import run_app
from fer_runtime.extras import require

SERVE_MODULES = ("fastapi", "uvicorn", "websockets", "prometheus_client")


def serve(config: Any, verbose: bool = False) -> None:
    """Run uvicorn with ``config`` until SIGTERM or Ctrl-C (in-flight requests finish first)."""
    import uvicorn

    from fer_runtime.serve.limits import CONFIG_ENV

    os.environ[CONFIG_ENV] = config.to_json()  # worker processes read their settings from here
    uvicorn.run("fer_runtime.serve.app:app_from_env", factory=True, host=config.host, port=config.port,
                workers=config.workers if config.workers > 1 else None, ws_max_size=config.max_ws_message_bytes,
                limit_concurrency=config.max_connections, timeout_keep_alive=5,
                timeout_graceful_shutdown=int(config.graceful_s), access_log=False, server_header=False,
                log_level="info" if verbose else "warning")


def startup_line(config: Any) -> str:
    from fer_runtime.serve.limits import jobs_per_worker

    scheme = "token required" if config.token else "no token"
    batching = f"micro-batching up to {config.batch_size} faces" if config.batch_size > 1 else "no micro-batching"
    return (f"fer-serve: http://{config.host}:{config.port} ({scheme}), model {config.model or 'default'}, "
            f"{config.workers} worker(s) x {jobs_per_worker(config)} job(s) x {config.threads} thread(s), "
            f"{config.queue} queued per worker, {batching}")


def _build_app() -> Any:
    require("fer-serve", SERVE_MODULES, "serve")
    import typer

    from fer_runtime.app import detector_defaults
    from fer_runtime.errors import ConfigError
    from fer_runtime.serve.limits import TOKEN_ENV, ServeConfig

    base, det = ServeConfig(), detector_defaults()
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @app.command()
    def fer_serve(
        host: Annotated[str, typer.Option(help="Address to listen on. Anything but loopback needs --token (or --insecure).")] = base.host,
        port: Annotated[int, typer.Option(help="TCP port.")] = base.port,
        token: Annotated[Optional[str], typer.Option(envvar=TOKEN_ENV, show_envvar=True, help=(
            "Require 'Authorization: Bearer TOKEN' on every endpoint but /healthz and /readyz (16+ characters). "
            "Prefer the environment variable: a command line is visible to other users."))] = None,
        insecure: Annotated[bool, typer.Option("--insecure", help="Allow a non-loopback --host without a token.")] = False,
        cors_origin: Annotated[Optional[list[str]], typer.Option(help="Allow browser calls from this origin (repeat); none by default.")] = None,
        workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = base.workers,
        threads: Annotated[int, typer.Option(min=1, help="ONNX Runtime threads per model and job.")] = base.threads,
        jobs: Annotated[int, typer.Option(min=0, help="Images processed at once per worker (0: cores / (workers x threads)).")] = 0,
        queue: Annotated[int, typer.Option(min=1, help="Requests that may wait per worker; more get 503 + Retry-After.")] = base.queue,
        model: Annotated[str, typer.Option(help="Model name (fer-predict --list-models) or .onnx path (default: the bundled default).")] = "",
        models_dir: Annotated[Optional[str], typer.Option(envvar="FER_MODELS_DIR", help="A source checkout's models/ folder.")] = None,
        precision: Annotated[str, typer.Option(help="'auto': of a model with fp32 and int8 files, the faster on this CPU; 'fp32', 'int8', or 'named' (exactly --model). GET /v1/models says which was loaded and why.")] = base.precision,
        max_body_bytes: Annotated[int, typer.Option(min=1, help="Largest request body (413 above).")] = base.max_body_bytes,
        max_pixels: Annotated[int, typer.Option(min=1, help="Largest image, width x height, checked before decoding (413 above).")] = base.max_pixels,
        max_crops: Annotated[int, typer.Option(min=1, help="Most crops in one /v1/crops request.")] = base.max_crops,
        max_faces: Annotated[int, typer.Option(min=1, max=100, help="Faces classified per image by default (best detector scores).")] = base.max_faces,
        max_frame_bytes: Annotated[int, typer.Option(min=1, help="Largest WebSocket message.")] = base.max_ws_message_bytes,
        max_fps: Annotated[float, typer.Option(min=0.1, help="Most frames processed per second and stream (newer frames replace older).")] = base.max_fps,
        max_streams: Annotated[int, typer.Option(min=1, help="Most open WebSocket streams per worker.")] = base.max_streams,
        max_connections: Annotated[int, typer.Option(min=1, help="Most open connections per worker (503 above).")] = base.max_connections,
        request_timeout: Annotated[float, typer.Option(min=0.1, help="Seconds a request may take once its body is in (504 above).")] = base.request_timeout_s,
        body_timeout: Annotated[float, typer.Option(min=0.1, help="Seconds a body may take to arrive (408 above).")] = base.body_timeout_s,
        batch_size: Annotated[int, typer.Option(min=1, help="Micro-batching: most faces of concurrent requests in one classifier call (1: off).")] = base.batch_size,
        batch_wait_ms: Annotated[float, typer.Option(min=0.0, max=100.0, help="Micro-batching: longest wait for more faces.")] = base.batch_wait_ms,
        graceful_timeout: Annotated[float, typer.Option(min=1.0, help="On SIGTERM, seconds in-flight requests get to finish.")] = base.graceful_s,
        min_face: Annotated[int, typer.Option(min=8, max=1024, help="Default smallest face, in pixels.")] = det["min_face"],
        score_threshold: Annotated[float, typer.Option(min=0.3, max=1.0, help="Default least detector score.")] = det["score_threshold"],
        max_size: Annotated[int, typer.Option(min=160, max=1920, help="Default longer side that detection works at.")] = det["max_size"],
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="The server's info logs (never request contents).")] = False,
    ) -> None:
        """Serve facial expression recognition over HTTP and WebSocket: POST /v1/faces, POST /v1/crops,
        WS /v1/stream, GET /v1/models, /healthz, /readyz, /metrics (docs/SERVE.md)."""
        try:
            config = ServeConfig(host=host, port=port, token=token or None, insecure=insecure,
                                 cors_origins=tuple(cors_origin or ()), workers=workers, threads=threads,
                                 jobs=jobs or None, queue=queue, model=model or None, models_dir=models_dir, precision=precision,
                                 max_body_bytes=max_body_bytes, max_pixels=max_pixels, max_crops=max_crops,
                                 max_faces=max_faces, max_ws_message_bytes=max_frame_bytes, max_fps=max_fps,
                                 max_streams=max_streams, max_connections=max_connections,
                                 body_timeout_s=body_timeout, request_timeout_s=request_timeout,
                                 batch_size=batch_size, batch_wait_ms=batch_wait_ms, graceful_s=graceful_timeout,
                                 detector={"min_face": min_face, "score_threshold": score_threshold,
                                           "max_size": max_size})
        except ConfigError as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None
        typer.echo(startup_line(config), err=True)
        serve(config, verbose)

    return app


def main() -> None:
    run_app(_build_app)


if __name__ == "__main__":
    sys.exit(main())
