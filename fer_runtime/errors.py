"""The runtime's exceptions: one base class, a few kinds, messages that say what to do."""

from __future__ import annotations


class FerError(Exception):
    """Base class of every error fer_runtime raises on purpose."""


class InputError(FerError, ValueError):
    """An image (or batch) the runtime cannot classify: empty, wrong shape or dtype, NaN/inf."""


class ConfigError(FerError, ValueError):
    """A setting out of its range or of the wrong kind (a threshold, a size, a color order...);
    the message names the setting, what it takes and what it got."""


class ModelError(FerError):
    """The model file is missing, unreadable, corrupted or not a FER model."""


class ModelIntegrityError(ModelError):
    """A bundled model's sha256 does not match the one recorded in the package."""


class ProviderError(FerError):
    """The requested ONNX Runtime execution providers cannot be used here."""


class MissingExtraError(FerError, ImportError):
    """An optional feature needs a package from an extra, e.g. ``pip install 'fer-edge[image]'``."""
