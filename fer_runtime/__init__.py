"""fer_runtime: facial expression recognition inference with NumPy (and ONNX Runtime).

The runtime never imports torch. Public API:

* :data:`LABELS` - the seven classes in label order,
* :class:`PreprocessConfig`, :func:`preprocess` - the one preprocessing function,
* :func:`equalize_hist`, :func:`to_gray`, :func:`resize` - its steps.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fer_runtime.labels import LABELS, NUM_CLASSES
from fer_runtime.preprocessing import (
    PreprocessConfig,
    equalize_hist,
    faces_to_uint8,
    preprocess,
    resize,
    to_gray,
)

try:
    __version__ = version("fer-edge")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "LABELS",
    "NUM_CLASSES",
    "PreprocessConfig",
    "__version__",
    "equalize_hist",
    "faces_to_uint8",
    "preprocess",
    "resize",
    "to_gray",
]
