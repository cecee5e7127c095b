"""The service's Prometheus metrics, in a registry of its own (one per app, so tests can make many).

With ``--workers N`` each worker process counts its own requests: a scrape reaches one of them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
FACE_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 100)


class Metrics:
    """Requests and errors by endpoint and status, latency, faces, batch sizes, queue depth, streams."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = reg = CollectorRegistry()
        self.requests = Counter("fer_requests", "HTTP requests and WebSocket connections by endpoint and status",
                                ["endpoint", "method", "status"], registry=reg)
        self.errors = Counter("fer_errors", "Error answers by endpoint and error type", ["endpoint", "type"],
                              registry=reg)
        self.latency = Histogram("fer_request_seconds", "Time from request to answer, by endpoint", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=reg)
        self.faces = Histogram("fer_faces_per_image", "Faces found per image", buckets=FACE_BUCKETS, registry=reg)
        self.batch = Histogram("fer_batch_faces", "Faces per classifier call", buckets=BATCH_BUCKETS, registry=reg)
        self.queue = Gauge("fer_queue_depth", "Requests admitted and waiting for a job", registry=reg)
        self.running = Gauge("fer_jobs_running", "Images being processed now", registry=reg)
        self.streams = Gauge("fer_streams", "Open WebSocket streams", registry=reg)
        self.frames = Counter("fer_stream_frames", "Stream frames by outcome (processed, dropped, error)",
                              ["outcome"], registry=reg)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, method, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def error(self, endpoint: str, kind: str) -> None:
        self.errors.labels(endpoint, kind).inc()
