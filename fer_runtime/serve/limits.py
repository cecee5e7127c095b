"""The service's settings and its safety rules: where it may bind, what a request may send, how
much work may wait. Pure Python (no web framework), so the command line checks them first.

Every limit has a default that is safe on a small machine; the command line can raise each one.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
from dataclasses import asdict, dataclass, field, fields

from fer_runtime.errors import ConfigError
from fer_runtime.precision import check_precision

TOKEN_ENV = "FER_SERVE_TOKEN"
CONFIG_ENV = "FER_SERVE_CONFIG"  # how the settings reach worker processes (--workers N)
LOOPBACK_NAMES = ("localhost",)

# Detector settings a request may choose (query parameters), and their safe bounds: a low score
# threshold or a large working size costs time, so neither is open-ended.
DETECTOR_BOUNDS = {
    "score_threshold": (0.3, 1.0),
    "nms_threshold": (0.05, 1.0),
    "min_face": (8, 1024),
    "max_size": (160, 1920),
    "max_faces": (1, 100),
}


@dataclass(frozen=True)
class ServeConfig:
    """Everything a service process needs. ``token``: required as ``Authorization: Bearer TOKEN``
    on every endpoint but health (None: no token). ``insecure``: allow a non-loopback bind without
    a token. ``jobs``: images processed at once per worker (None: cores / (workers x threads));
    ``queue``: requests that may wait for one (more are answered 503). ``threads``: ONNX Runtime
    threads per model and job. ``batch_size``/``batch_wait_ms``: micro-batching of faces across requests
    (``batch_size`` 1: off). ``detector``: the face detector's default settings
    (:data:`fer_runtime.app.DETECTOR_OPTIONS`); ``max_faces``: faces classified per image by default."""

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    insecure: bool = False
    cors_origins: tuple[str, ...] = ()
    workers: int = 1
    threads: int = 1
    jobs: int | None = None
    queue: int = 16
    model: str | None = None
    models_dir: str | None = None
    precision: str = "auto"
    max_body_bytes: int = 8 * 2**20
    max_pixels: int = 16_000_000
    max_crops: int = 64
    max_ws_message_bytes: int = 2 * 2**20
    max_fps: float = 30.0
    max_streams: int = 8
    max_connections: int = 128
    body_timeout_s: float = 10.0
    request_timeout_s: float = 30.0
    ws_idle_s: float = 60.0
    batch_size: int = 1
    batch_wait_ms: float = 2.0
    smoothing_s: float = 0.5
    max_age_s: float = 1.0
    graceful_s: float = 30.0
    max_faces: int = 32
    detector: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_config(self)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        data = json.loads(text)
        data["cors_origins"] = tuple(data.get("cors_origins", ()))
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def _positive(config: ServeConfig, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(f"{name} must be a positive number, got {value!r}")


def check_config(config: ServeConfig) -> None:
    """ConfigError for a setting out of range, or an address that would expose the service unprotected."""
    _positive(config, ("workers", "threads", "queue", "max_body_bytes", "max_pixels", "max_crops", "max_ws_message_bytes",
                       "max_fps", "max_streams", "max_connections", "body_timeout_s", "request_timeout_s", "ws_idle_s",
                       "batch_size", "graceful_s"))
    if config.jobs is not None and (isinstance(config.jobs, bool) or not isinstance(config.jobs, int) or config.jobs < 1):
        raise ConfigError(f"jobs must be an int >= 1, got {config.jobs!r}")
    if not 0 <= config.batch_wait_ms <= 100:
        raise ConfigError(f"batch_wait_ms must be in [0, 100], got {config.batch_wait_ms}")
    if not 0 <= config.port <= 65535:
        raise ConfigError(f"port must be in 0-65535, got {config.port}")
    if config.token is not None and len(config.token) < 16:
        raise ConfigError("the token must be at least 16 characters (e.g. python -c 'import secrets; "
                          "print(secrets.token_urlsafe(32))')")
    if not config.token and not config.insecure and not is_loopback(config.host):
        raise ConfigError(f"refusing to listen on {config.host} without a token: anyone who can reach it could use "
                          f"it. Set --token or ${TOKEN_ENV}, or bind 127.0.0.1 (behind a reverse proxy), or pass "
                          "--insecure if the network is yours alone")
    for name, value in {**config.detector, "max_faces": config.max_faces}.items():
        check_detector_setting(name, value)
    check_precision(config.precision)


def check_detector_setting(name: str, value: float) -> None:
    """ConfigError unless ``name`` is a detector setting (or ``max_faces``) within :data:`DETECTOR_BOUNDS`."""
    if name not in DETECTOR_BOUNDS:
        raise ConfigError(f"unknown detector setting {name!r}; choose from {', '.join(DETECTOR_BOUNDS)}")
    low, high = DETECTOR_BOUNDS[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigError(f"detector setting {name} must be in {low}..{high}, got {value!r}")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (127.0.0.0/8, ::1) or ``localhost``."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def jobs_per_worker(config: ServeConfig, cores: int | None = None) -> int:
    """Images processed at once per worker: ``config.jobs``, or as many as fill the cores with
    workers x jobs x threads (at least 1). One thread per job by default: on two cores, two
    single-threaded jobs served more requests per second than one job on two threads (BENCHMARKS.md)."""
    if config.jobs is not None:
        return config.jobs
    return max(1, (cores or os.cpu_count() or 1) // (config.workers * config.threads))


def token_ok(given: str | None, token: str) -> bool:
    """Whether a client's token is the service's (compared in constant time)."""
    return given is not None and hmac.compare_digest(given.encode(), token.encode())
