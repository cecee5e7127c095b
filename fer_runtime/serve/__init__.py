"""``fer-serve``: facial expression recognition as an HTTP and WebSocket service (``pip install
'fer-edge[serve]'``; docs/SERVE.md).

:mod:`.limits` (settings and safety rules, framework-free), :mod:`.engine` (admission, jobs,
inference), :mod:`.batching` (faces of concurrent requests in one classifier call), :mod:`.app`
(the FastAPI routes), :mod:`.schemas` (the answers' shapes for the OpenAPI document), :mod:`.stream`
(the WebSocket), :mod:`.metrics` (Prometheus), :mod:`.cli` (the command). Only :mod:`.limits` is imported here, so the command can check its settings before
the web framework loads.
"""

from fer_runtime.serve.limits import ServeConfig

__all__ = ["ServeConfig"]
