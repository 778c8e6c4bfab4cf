"""Methods scored beside the model in ``n2n eval``: our model self-ensembled, and BM3D.

Both are predictors (``predict(NxHxWxC float32) -> NxHxWxC float32``), so the evaluation loop
runs them on exactly the same noisy draws as the model.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from n2ncli.backends import Predictor
from n2ncli.errors import ConfigError

BM3D_HINT = "pip install 'n2ncli[bm3d]'"


def _forward(batch: np.ndarray, k: int) -> np.ndarray:
    """Transform ``k`` of the 8 (dihedral group): rotate by k % 4 quarter turns, flip if k >= 4."""
    out = np.rot90(batch, k % 4, axes=(1, 2))
    return out[:, :, ::-1] if k >= 4 else out


def _inverse(batch: np.ndarray, k: int) -> np.ndarray:
    out = batch[:, :, ::-1] if k >= 4 else batch
    return np.rot90(out, -(k % 4), axes=(1, 2))


class SelfEnsemble:
    """Averages a predictor's outputs over the 8 flips/rotations of its input (x8 the time)."""

    def __init__(self, predictor: Predictor) -> None:
        self.inner = predictor
        self.channels = predictor.channels

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """NxHxWxC float32 -> NxHxWxC float32, the mean of the 8 back-transformed outputs."""
        total = np.zeros(batch.shape, dtype=np.float64)
        for k in range(8):
            out = self.inner.predict(np.ascontiguousarray(_forward(batch, k)))
            total += _inverse(out, k)
        return (total / 8.0).astype(np.float32)


def bm3d_available() -> bool:
    """Whether the optional ``bm3d`` package is importable."""
    return importlib.util.find_spec("bm3d") is not None


def estimate_sigma(img: np.ndarray) -> float:
    """Noise standard deviation of an HxWxC float image in [0,1] (same units), blind.

    Donoho's estimator: median absolute value of the finest diagonal Haar detail / 0.6745,
    averaged over channels. Used where the level is unknown (ranges, Poisson, real noise).
    """
    h, w = (img.shape[0] // 2) * 2, (img.shape[1] // 2) * 2
    x = img[:h, :w].astype(np.float64)
    hh = (x[0::2, 0::2] - x[0::2, 1::2] - x[1::2, 0::2] + x[1::2, 1::2]) / 2.0
    return float(np.mean([np.median(np.abs(hh[..., c])) / 0.6745 for c in range(x.shape[2])]))


class BM3D:
    """BM3D from the ``bm3d`` package; ``sigma`` on the 0-255 scale, or None to estimate per image."""

    def __init__(self, channels: int = 3, sigma: float | None = None) -> None:
        if not bm3d_available():
            raise ConfigError(f"BM3D needs the bm3d package ({BM3D_HINT})")
        self.channels = channels
        self.sigma = sigma

    def predict(self, batch: np.ndarray) -> np.ndarray:
        import bm3d

        out = []
        for img in batch:
            sigma = self.sigma / 255.0 if self.sigma is not None else estimate_sigma(img)
            sigma = max(sigma, 1e-4)
            if img.shape[2] == 3:
                est = bm3d.bm3d_rgb(img.astype(np.float64), sigma)
            else:
                est = bm3d.bm3d(img[..., 0].astype(np.float64), sigma)[..., None]
            out.append(np.asarray(est, dtype=np.float32).reshape(img.shape))
        return np.stack(out)
