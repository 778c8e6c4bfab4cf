"""Keep a raw denoiser within the noise: where a model changes an area by more than its noise
could account for, that area takes only part of the change.

Neighbor2Neighbor learns to predict each pixel's *neighbour*. Where the noise is low, what
separates neighbours is the signal, so a model trained over a wide ISO range smooths fine detail
at low ISO: the shipped ``raw-camera`` turned Kodak24 mosaics at low ISO from 46.49 into 33.13
dB. If each pixel's noise variance s2 is known, the output ``y - a * r`` (``r = y - f(y)``, the
model's change) with ``a = s2 / E[r^2]`` is the least-squares blend of input and model when the
model's error does not follow the noise; over 16x16 packed pixels and capped at 1, it leaves
the model's output wherever it removed about the noise (flat areas, high ISO) and keeps the
input's detail wherever it removed far more (``bench/raw_synthetic.py``, all 24 images: low
ISO 33.13 -> 43.91 dB against 46.49 noisy, high ISO 32.17 -> 34.84 dB).

The noise is measured on the raw itself, as a line ``s2 = shot * x + read`` in normalised units
(the sensor's heteroscedastic model): a diagonal Haar difference of each packed channel has the
noise's variance and cancels smooth signal; its lower quartile per brightness bin resists
texture, which would otherwise count as noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from n2ncli.backends import Predictor
from n2ncli.pd import _Forwarding

#: Side of the square (packed pixels) over which the model's change is compared with the noise.
WINDOW = 16
#: Brightness bins of the noise fit, and the quantile of |Haar diagonal| taken in each.
BINS, QUANTILE = 16, 0.25
#: |N(0, 1)|'s QUANTILE-quantile: the Gaussian value the quantile of |d| is divided by.
_Z_QUANTILE = 0.31863936396437514
#: At most this many Haar coefficients enter the fit (a strided subset of larger images).
MAX_SAMPLES = 1_000_000
#: Fewest coefficients a brightness bin needs to count.
MIN_BIN = 50


@dataclass(frozen=True)
class NoiseLevel:
    """Noise variance ``shot * x + read`` of a normalised raw value x (0 black, 1 white)."""

    shot: float
    read: float

    def variance(self, x: np.ndarray) -> np.ndarray:
        return (self.shot * np.clip(x, 0.0, None) + self.read).astype(np.float32)


def estimate_noise(packed: np.ndarray) -> NoiseLevel:
    """The noise line of an HxWxC packed mosaic, measured from the image itself.

    A flat or noise-free image gives a zero line, so ``keep_within_noise`` then keeps the input.
    """
    h, w = packed.shape[0] // 2 * 2, packed.shape[1] // 2 * 2
    if h == 0 or w == 0:
        return NoiseLevel(0.0, 0.0)
    a, b = packed[0:h:2, 0:w:2], packed[0:h:2, 1:w:2]
    c, d = packed[1:h:2, 0:w:2], packed[1:h:2, 1:w:2]
    diag = np.abs(a - b - c + d).ravel() / 2
    mean = ((a + b + c + d) / 4).ravel()
    step = max(1, diag.size // MAX_SAMPLES)
    diag, mean = diag[::step], mean[::step]
    edges = np.quantile(mean, np.linspace(0.0, 1.0, BINS + 1))
    bin_of = np.clip(np.searchsorted(edges, mean, side="right") - 1, 0, BINS - 1)
    xs, vs = [], []
    for k in range(BINS):
        sel = bin_of == k
        if np.count_nonzero(sel) >= MIN_BIN:
            xs.append(float(mean[sel].mean()))
            vs.append((float(np.quantile(diag[sel], QUANTILE)) / _Z_QUANTILE) ** 2)
    return _fit_line(np.asarray(xs), np.asarray(vs))


def _fit_line(xs: np.ndarray, vs: np.ndarray) -> NoiseLevel:
    """Least-squares ``v = shot * x + read`` with both terms kept non-negative."""
    if xs.size == 0:
        return NoiseLevel(0.0, 0.0)
    x = np.clip(xs, 0.0, None)
    if xs.size >= 2 and np.ptp(x) > 0:
        shot, read = np.linalg.lstsq(np.stack([x, np.ones_like(x)], 1), vs, rcond=None)[0]
        if shot >= 0 and read >= 0:
            return NoiseLevel(float(shot), float(read))
        if read < 0 and float(x @ x) > 0:  # no read floor measurable: shot noise alone
            return NoiseLevel(max(float(x @ vs) / float(x @ x), 0.0), 0.0)
    return NoiseLevel(0.0, max(float(vs.mean()), 0.0))


def _box_mean(a: np.ndarray, size: int, cell: int = 4) -> np.ndarray:
    """Mean over about a size x size window around each pixel of HxWxC ``a``: sums over
    ``cell`` x ``cell`` cells, a sliding window of size/cell cells over them, each pixel taking
    its cell's value (a 24 MP raw: ~1 s, against ~3 s for the per-pixel window)."""
    h, w, c = a.shape
    hc, wc = -(-h // cell), -(-w // cell)
    p = np.pad(a, ((0, hc * cell - h), (0, wc * cell - w), (0, 0)), mode="edge")
    cells = p.reshape(hc, cell, wc, cell, c).sum(axis=(1, 3), dtype=np.float64)
    k = max(1, size // cell)
    lo, hi = k // 2, k - k // 2 - 1
    q = np.pad(cells, ((lo, hi), (lo, hi), (0, 0)), mode="edge")
    s = np.zeros((hc + k, wc + k, c))
    s[1:, 1:] = q.cumsum(0).cumsum(1)
    box = (s[k:, k:] - s[:hc, k:] - s[k:, :wc] + s[:hc, :wc]) / (k * k * cell * cell)
    return np.repeat(np.repeat(box.astype(np.float32), cell, axis=0), cell, axis=1)[:h, :w]


def keep_within_noise(noisy: np.ndarray, denoised: np.ndarray, level: NoiseLevel | None = None,
                      window: int = WINDOW) -> np.ndarray:
    """``noisy - a * (noisy - denoised)`` with ``a = min(1, noise variance / change^2)`` per window."""
    level = estimate_noise(noisy) if level is None else level
    change = noisy - denoised
    allowed = _box_mean(level.variance(denoised), window)
    made = _box_mean(change * change, window)
    share = np.minimum(1.0, allowed / np.maximum(made, np.float32(1e-20)))
    return (noisy - share * change).astype(np.float32)


class NoiseGuarded(_Forwarding):
    """A raw predictor whose whole-image output ``denoise_raw`` keeps within the input's noise."""

    def __init__(self, inner: Predictor) -> None:
        self.inner = inner
        self.channels = inner.channels
