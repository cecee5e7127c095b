"""The peer's side of ``fer-bench peer``: the PyPI package ``fer`` behind a JSON-lines protocol.

Run by the peer's own python (a separate virtual environment that has ``fer`` and TensorFlow; ours
never does), one process per thread setting, so neither package's threads, allocator or import
cost touch the other's figures::

    /path/to/peer/bin/python peer_fer_worker.py --threads 1 --spawned-at 1700000000.0

This file therefore imports only the standard library and NumPy at the top, and OpenCV, ``fer`` and
TensorFlow when it starts; never ``fer_runtime`` or ``fer_bench``. ``fer_bench.peer`` imports the
protocol half (:func:`serve`, :class:`Worker`) for our own worker, so both sides speak it alike.

The protocol: one JSON object per line in, one per line out, in order. Faces and frames travel as
``.npy`` files that the orchestrator writes, never through the pipe. Requests (``op``): ``load``,
``time_faces``, ``throughput``, ``predict``, ``frames``, ``rss``, ``quit``; an answer that failed is
``{"error": "..."}``, and the worker keeps serving.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import numpy as np

WORKER_STARTED = time.time()  # the fallback origin of the cold start when --spawned-at is not given

# fer.FER.detect_emotions's class order (its _get_labels), the same 7 classes in the same order as ours.
FER_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def os_threads() -> int | None:
    """Threads of this process now (Linux): shows what a 'default' thread setting really started."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def ru_maxrss_mb() -> float:
    """getrusage's peak resident memory (KiB on Linux, bytes on macOS). On Linux it carries over a fork
    and an exec: a worker spawned by a large parent starts from the parent's size."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def peak_rss_mb() -> float:
    """Peak resident memory of this process's own address space (Linux VmHWM, which starts afresh at
    exec), else :func:`ru_maxrss_mb`."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return ru_maxrss_mb()


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


class Worker:
    """What both sides share: the requests, timed the same way; a package fills in the calls.

    Subclasses set ``package`` and ``startup`` (import and cold-start seconds, versions) when they are
    made, and implement :meth:`prepare`, :meth:`face_call`, :meth:`model_call`,
    :meth:`throughput_calls`, :meth:`labels` and :meth:`find_faces`.
    """

    package = "?"

    def __init__(self) -> None:
        self.startup: dict[str, Any] = {}
        self.count = 0
        self.frames: np.ndarray | None = None

    # --- what a package provides -------------------------------------------------------------------

    def prepare(self, faces: np.ndarray) -> None:
        """Turn the (N, 48, 48) uint8 grey faces into this package's inputs, outside any timing."""
        raise NotImplementedError

    def face_call(self, i: int) -> Any:
        """Face ``i`` end to end, batch 1, through the package's public call."""
        raise NotImplementedError

    def model_call(self, i: int) -> Any:
        """Face ``i``, already preprocessed, through the model alone."""
        raise NotImplementedError

    def throughput_calls(self) -> dict[str, Callable[[], Any]]:
        """Ways of classifying all the faces, by name (every one is timed; the report quotes the fastest)."""
        raise NotImplementedError

    def labels(self) -> dict[str, list[int]]:
        """Predicted class index per face, per way of asking (-1 where the package gave no answer)."""
        raise NotImplementedError

    def find_faces(self, rgb: np.ndarray) -> Callable[[], list[list[float]]]:
        """A call that finds and classifies the faces of one RGB frame and returns their boxes (x, y, w, h)."""
        raise NotImplementedError

    # --- the requests ------------------------------------------------------------------------------

    def op_load(self, faces: str, frames: str | None = None) -> dict[str, Any]:
        stack = np.load(faces, allow_pickle=False)
        if stack.dtype != np.uint8 or stack.ndim != 3:
            raise ValueError(f"faces must be uint8 (N, H, W), got {stack.dtype} {stack.shape}")
        self.count = len(stack)
        self.prepare(stack)
        if frames:
            self.frames = np.load(frames, allow_pickle=False)
        return {"package": self.package, "faces": self.count, "os_threads": os_threads(), **self.startup}

    def op_time_faces(self, start: int, count: int, mode: str = "end_to_end") -> dict[str, Any]:
        call = {"end_to_end": self.face_call, "model": self.model_call}.get(mode)
        if call is None:
            raise ValueError(f"mode must be 'end_to_end' or 'model', got {mode!r}")
        indices = [(start + k) % self.count for k in range(count)]
        return {"seconds": [timed(lambda i=i: call(i)) for i in indices]}

    def op_throughput(self) -> dict[str, Any]:
        return {"faces": self.count, "seconds": {name: timed(fn) for name, fn in self.throughput_calls().items()}}

    def op_predict(self) -> dict[str, Any]:
        return {"labels": self.labels()}

    def op_frames(self, warmup: bool = False) -> dict[str, Any]:
        if self.frames is None:
            raise ValueError("no frames were loaded")
        seconds, boxes = [], []
        for frame in self.frames:
            call = self.find_faces(frame)
            if warmup:
                call()
            t0 = time.perf_counter()
            found = call()
            seconds.append(time.perf_counter() - t0)
            boxes.append(found)
        return {"seconds": seconds, "boxes": boxes}

    def op_rss(self) -> dict[str, Any]:
        return {"peak_rss_mb": peak_rss_mb(), "ru_maxrss_mb": ru_maxrss_mb(), "os_threads": os_threads()}

    def op_quit(self) -> dict[str, Any]:
        return {"ok": True}


def protocol_streams() -> tuple[TextIO, TextIO]:
    """The request stream and a private copy of stdout for the answers; fd 1 itself then points at
    stderr, so that anything a library prints (Python or C) cannot corrupt the protocol."""
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return sys.stdin, answers


def serve(worker: Worker, requests: TextIO, answers: TextIO) -> None:
    """Answer one JSON line per request line until ``quit`` or the end of the input."""
    for line in requests:
        if not line.strip():
            continue
        op = "?"
        try:
            request = json.loads(line)
            op = str(request.pop("op"))
            method = getattr(worker, f"op_{op}", None)
            if method is None:
                raise ValueError(f"unknown op {op!r}")
            answer = method(**request)
        except Exception as exc:  # noqa: BLE001 - any failure is the orchestrator's to report; keep serving
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()
        if op == "quit":
            return


def cold_start(spawned_at: float | None, first_prediction: float) -> float:
    """Seconds from the process's launch (the orchestrator's clock just before it spawned us; else
    this module's first line) to the first prediction."""
    return first_prediction - (spawned_at if spawned_at is not None else WORKER_STARTED)


def parse_threads(text: str) -> int | None:
    """'1' -> 1, 'default' -> None (the package's own default)."""
    if text == "default":
        return None
    value = int(text)
    if value < 1:
        raise ValueError(f"--threads must be a positive integer or 'default', got {text!r}")
    return value


# --- fer ---------------------------------------------------------------------------------------------


class FerWorker(Worker):
    """``fer.fer.FER`` (25.10.x): its quantized TFLite mini-Xception on 64x64 grey faces.

    Per face it is asked the public way, ``detect_emotions(bgr, face_rectangles=[(0, 0, w, h)])``, which
    pads, crops with ``offsets``, resizes, scales and invokes the interpreter. ``threads=1`` swaps in an
    interpreter made with ``num_threads=1`` (FER makes its own without, i.e. TensorFlow's default) and
    sets OpenCV to one thread (its Haar cascade is parallel); ``None`` leaves both as FER makes them.
    """

    package = "fer"

    def __init__(self, threads: int | None, spawned_at: float | None) -> None:
        super().__init__()
        t0 = time.perf_counter()
        import cv2
        import fer
        import tensorflow as tf
        from fer.fer import FER

        import_s = time.perf_counter() - t0
        self.cv2 = cv2
        if threads is not None:
            cv2.setNumThreads(threads)
        self.model_path = Path(fer.__file__).parent / "data" / "emotion_model_quantized.tflite"
        self.default = FER()  # offsets (10, 10)
        interpreter = None
        if threads is not None:
            interpreter = tf.lite.Interpreter(model_path=str(self.model_path), num_threads=threads)
            interpreter.allocate_tensors()
            use_interpreter(self.default, interpreter)
        probe = cv2.cvtColor(np.full((48, 48), 128, np.uint8), cv2.COLOR_GRAY2BGR)
        if not self.default.detect_emotions(probe, face_rectangles=[(0, 0, 48, 48)]):
            raise RuntimeError("fer gave no answer for a face whose box was given")
        first, rss = time.time(), peak_rss_mb()
        self.tight = FER(offsets=(0, 0))  # the face's own box (FER2013 faces are tight crops), for accuracy only
        if interpreter is not None:
            use_interpreter(self.tight, interpreter)
        self.startup = {"import_s": import_s, "cold_start_s": cold_start(spawned_at, first),
                        "threads": "TensorFlow's default" if threads is None else threads, "startup_peak_rss_mb": rss,
                        "versions": {"fer": fer.__version__, "tensorflow": tf.__version__, "opencv": cv2.__version__,
                                     "numpy": np.__version__, "python": sys.version.split()[0]},
                        "interpreter": "FER's own (num_threads unset)" if threads is None
                        else f"tf.lite.Interpreter(num_threads={threads}) swapped into FER's private attributes"}

    def prepare(self, faces: np.ndarray) -> None:
        cv2 = self.cv2
        self.gray = faces
        self.bgr = [cv2.cvtColor(f, cv2.COLOR_GRAY2BGR) for f in faces]
        self.boxes = [[(0, 0, f.shape[1], f.shape[0])] for f in faces]
        # What detect_emotions feeds the interpreter for a tight box: resized to 64x64, scaled to [-1, 1].
        resized = np.stack([cv2.resize(f, (64, 64)) for f in faces]).astype(np.float32)
        self.inputs = ((resized / 255.0 - 0.5) * 2.0)[:, None, :, :, None]
        self.interpreter = interpreter_of(self.default)

    def face_call(self, i: int) -> Any:
        return self.default.detect_emotions(self.bgr[i], face_rectangles=self.boxes[i])

    def model_call(self, i: int) -> Any:
        interpreter, inp, out = self.interpreter
        interpreter.set_tensor(inp, self.inputs[i])
        interpreter.invoke()
        return interpreter.get_tensor(out)

    def throughput_calls(self) -> dict[str, Callable[[], Any]]:
        cv2 = self.cv2

        def per_face() -> None:
            for i in range(self.count):
                self.default.detect_emotions(self.bgr[i], face_rectangles=self.boxes[i])

        def stack() -> None:  # detect_emotions's own resize and scaling, then its batch classifier
            resized = np.array([cv2.resize(f, (64, 64)) for f in self.gray], dtype=np.float32)
            self.default._classify_emotions((resized / 255.0 - 0.5) * 2.0)

        return {"detect_emotions per face": per_face,
                "resize + scale as detect_emotions does, then _classify_emotions on the stack": stack}

    def labels(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for name, instance in (("offsets (10, 10)", self.default), ("offsets (0, 0)", self.tight)):
            rounded, raw = fer_labels(instance, self.bgr, self.boxes)
            out[f"detect_emotions, {name}"] = rounded
            out[f"detect_emotions, {name}, unrounded scores"] = raw
        return out

    def find_faces(self, rgb: np.ndarray) -> Callable[[], list[list[float]]]:
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        return lambda: [[float(v) for v in face["box"]] for face in self.default.detect_emotions(bgr)]


def use_interpreter(instance: Any, interpreter: Any) -> None:
    """Make a FER instance run ``interpreter`` (its private attributes; FER has no option for threads)."""
    if not hasattr(instance, "_FER__tflite_interpreter"):
        raise RuntimeError("this fer has no _FER__tflite_interpreter (the 1-thread setting needs fer 25.10.x "
                           "with use_tflite=True)")
    instance._FER__tflite_interpreter = interpreter
    instance._FER__tflite_input_details = interpreter.get_input_details()
    instance._FER__tflite_output_details = interpreter.get_output_details()


def interpreter_of(instance: Any) -> tuple[Any, int, int]:
    """The interpreter a FER instance runs, with its input and output tensor indices."""
    return (instance._FER__tflite_interpreter, instance._FER__tflite_input_details[0]["index"],
            instance._FER__tflite_output_details[0]["index"])


def fer_labels(instance: Any, bgr: list[np.ndarray], boxes: list[list[tuple[int, int, int, int]]]
               ) -> tuple[list[int], list[int]]:
    """Labels from ``detect_emotions`` as a user reads them (the top of its scores rounded to 2 decimals,
    ties to the first class, as ``FER.top_emotion`` does) and from the same call's unrounded scores
    (captured from ``_classify_emotions``): rounding can tie two classes."""
    captured: list[np.ndarray] = []
    original = instance._classify_emotions

    def capture(faces: np.ndarray) -> Any:
        scores = original(faces)
        captured.append(np.asarray(scores))
        return scores

    instance._classify_emotions = capture  # an instance attribute shadows the method, for this call only
    rounded, raw = [], []
    try:
        for image, box in zip(bgr, boxes):
            captured.clear()
            found = instance.detect_emotions(image, face_rectangles=box)
            if not found or not captured:
                rounded.append(-1)
                raw.append(-1)
                continue
            scores = found[0]["emotions"]
            top = max(scores, key=lambda k: scores[k])
            rounded.append(FER_LABELS.index(top))
            raw.append(int(np.argmax(captured[0][0])))
    finally:
        del instance._classify_emotions
    return rounded, raw


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="fer behind fer-bench peer's JSON-lines protocol (stdin/stdout).")
    parser.add_argument("--threads", default="default", help="'1' or 'default' (TensorFlow's and OpenCV's own).")
    parser.add_argument("--spawned-at", type=float, default=None, help="time.time() just before the launch.")
    args = parser.parse_args(argv)
    requests, answers = protocol_streams()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    worker = FerWorker(parse_threads(args.threads), args.spawned_at)
    serve(worker, requests, answers)


if __name__ == "__main__":
    main()
