"""Keep a raw denoiser within the noise: where a model changes an area by more than its noise
could account for, that area takes only part of the change.

Neighbor2Neighbor learns to predict each pixel's *neighbour*. Where the noise is low, what
separates neighbours is the signal, so a model trained over a wide ISO range smooths fine detail
at low ISO: the shipped ``raw-camera`` turned Kodak24 mosaics at low ISO from 46.75 into 34.04
dB. If each pixel's noise variance s2 is known, the output ``y - a * r`` (``r = y - f(y)``, the
model's change) with ``a = s2 / E[r^2]`` is the least-squares blend of input and model when the
model's error does not follow the noise; over 16x16 packed pixels and capped at 1, it leaves
the model's output wherever it removed about the noise (flat areas, high ISO) and keeps the
input's detail wherever it removed far more (``bench/raw_synthetic.py``: the same low-ISO
mosaics 44.2 dB, high ISO 32.96 -> 35.3 dB).

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


def _box_mean(a: np.ndarray, size: int) -> np.ndarray:
    """Mean over a size x size window around each pixel of HxWxC ``a`` (edges replicated)."""
    lo, hi = size // 2, size - size // 2 - 1
    h, w = a.shape[:2]
    out = np.empty(a.shape, np.float32)
    for ch in range(a.shape[2]):  # one channel at a time: the float64 sums of a 24 MP raw stay ~50 MB
        s = np.zeros((h + size, w + size))
        s[1:, 1:] = np.pad(a[..., ch], ((lo, hi), (lo, hi)), mode="edge").cumsum(0, dtype=np.float64).cumsum(1)
        out[..., ch] = (s[size:, size:] - s[:h, size:] - s[size:, :w] + s[:h, :w]) / (size * size)
    return out


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
