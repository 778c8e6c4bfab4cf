"""A backend whose 'denoised' output is its input: what survives it is what the pipeline keeps.

It records the shape of every batch it is given, so tests can check tiling and batching.
"""

from __future__ import annotations

import numpy as np


class Identity:
    def __init__(self, channels: int = 3) -> None:
        self.channels = channels
        self.shapes: list[tuple[int, ...]] = []

    def predict(self, batch: np.ndarray) -> np.ndarray:
        self.shapes.append(batch.shape)
        return batch.copy()
