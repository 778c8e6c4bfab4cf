"""One error family, so the CLI can catch ``N2nError`` and print one clean line."""

from __future__ import annotations


class N2nError(Exception):
    """Base of every error a user can cause or fix (bad file, unknown model, bad option)."""


class ConfigError(N2nError, ValueError):
    """An option or configuration value is out of range or malformed."""


class ImageReadError(N2nError):
    """An input image is missing, unreadable or of an unsupported kind."""


class UnsupportedRawError(ImageReadError):
    """A raw file LibRaw reads but that is not a Bayer mosaic (X-Trans, LinearRaw, Foveon, mono)."""


class ImageWriteError(N2nError):
    """An output could not be written (unsupported extension, refused overwrite, disk)."""


class ModelNotFoundError(N2nError):
    """No model of that name or path exists in the store or the package."""


class ChecksumMismatchError(N2nError):
    """Weights on disk do not match the sha256 recorded for them."""


class IncompatibleModelError(N2nError):
    """A model does not fit the input (channels, sRGB vs raw)."""


class DatasetError(N2nError):
    """An evaluation or training dataset is missing, empty or fails verification."""


class CheckpointError(N2nError):
    """A training checkpoint is missing, corrupt or belongs to another run."""


class TrainingInterrupted(N2nError):
    """Ctrl-C during training: the checkpoint is saved and the run can be resumed."""
