"""Micro-batching: face crops from concurrent requests classified in one ONNX Runtime call.

:class:`MicroBatcher` has the classifier's ``classify(crops, color_order)`` (the protocol
:class:`~fer_runtime.pipeline.FacePipeline` uses), so the pipeline runs unchanged on top of it.
Calls from many threads are queued; one thread takes the first waiting call, gathers others for up
to ``max_wait_ms`` (only while other images are still being detected, so a lone request never
waits) or until ``max_batch`` faces, classifies them all at once and hands each call its share.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, NamedTuple

import numpy as np

from fer_runtime.preprocessing import ColorOrder
from fer_runtime.results import Prediction


class _Call(NamedTuple):
    crops: list[np.ndarray]
    color_order: ColorOrder
    future: Future


class MicroBatcher:
    """Classify crops for many threads in shared batches. ``classifier``: an ``EmotionRecognizer``.
    ``busy()``: how many images are being worked on now (the batcher waits for more only when
    another one is). ``on_batch(n)``: called with each batch's face count (metrics)."""

    def __init__(self, classifier: Any, max_batch: int = 32, max_wait_ms: float = 2.0,
                 busy: Callable[[], int] = lambda: 0, on_batch: Callable[[int], None] = lambda n: None) -> None:
        self.classifier, self.max_batch, self.max_wait_s = classifier, max_batch, max_wait_ms / 1000
        self._busy, self._on_batch = busy, on_batch
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="fer-batcher", daemon=True)
        self._thread.start()

    def classify(self, crops: list[np.ndarray], color_order: ColorOrder) -> list[Prediction]:
        call = _Call(crops, color_order, Future())
        self._calls.put(call)
        return call.future.result()

    def close(self) -> None:
        self._calls.put(None)
        self._thread.join(timeout=5)

    def _gather(self, first: _Call) -> list[_Call]:
        calls, faces = [first], len(first.crops)
        deadline = time.monotonic() + self.max_wait_s
        while faces < self.max_batch:
            try:
                call = self._calls.get_nowait()
            except queue.Empty:
                left = deadline - time.monotonic()
                if left <= 0 or self._busy() <= len(calls):  # nobody else is coming soon
                    break
                try:
                    call = self._calls.get(timeout=min(left, 0.0005))
                except queue.Empty:
                    continue
            if call is None:
                self._calls.put(None)  # stop after this batch
                break
            calls.append(call)
            faces += len(call.crops)
        return calls

    def _loop(self) -> None:
        while (first := self._calls.get()) is not None:
            calls = self._gather(first)
            self._run([c for c in calls if c.color_order == first.color_order])
            self._run([c for c in calls if c.color_order != first.color_order])

    def _run(self, calls: list[_Call]) -> None:
        if not calls:
            return
        crops = [crop for call in calls for crop in call.crops]
        try:
            predictions = self.classifier.classify(crops, calls[0].color_order)
        except Exception as exc:  # noqa: BLE001  (handed to each caller, raised in its own thread)
            for call in calls:
                call.future.set_exception(exc)
            return
        self._on_batch(len(crops))
        start = 0
        for call in calls:
            call.future.set_result(predictions[start:start + len(call.crops)])
            start += len(call.crops)
