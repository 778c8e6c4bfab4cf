"""Inference backends: each offers ``predict(NxHxWxC float32) -> NxHxWxC float32``."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from n2ncli.errors import N2nError


class Predictor(Protocol):
    """What tiling and evaluation need from a backend, and nothing more."""

    channels: int

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Denoise NxHxWxC float32 (any H, W) -> NxHxWxC float32 (not clamped)."""
        ...


class OutOfMemory(N2nError):
    """A backend could not allocate memory for a batch; a smaller tile may fit."""
