"""Keep the input's local mean: noise averages out over an area, so a denoiser should not move
an area's average brightness or colour.

The networks do move it a little: on the real pairs the real-photo model's output minus its
input has a mean of -0.01 / -0.04 / +0.33 grey levels in R / G / B, and more locally. Adding back
the low-pass of what the model removed, ``out + G_sigma(noisy - out)`` with sigma 16 px (8 px at
stride 1, where the noise is fine-grained; 4 px where only the chroma noise is correlated;
8 packed pixels on raws), undoes that and brings back almost no noise: a Gaussian of 16 px
keeps 1/57 of independent noise's standard deviation (8 px: 1/28, 4 px: 1/14).

Measured with an exact Gaussian over outputs of the shipped models (docs/real-noise.md,
"Keeping the input's local mean"): the real pairs 37.36 -> 37.52 dB (better on 34 of 41); Kodak,
12 images, Gaussian sigma 15 as PNG 33.51 -> 33.56 and as JPEG q92 4:2:0 32.27 -> 32.38 at 16 px
(12 of 12 each), float sigma 25 31.42 -> 31.46; synthetic camera noise, where the clean
reference is exact, -0.01 and -0.03 dB.

The low-pass is computed on 4x4 cells (their mean, a Gaussian of sigma/4 cells, bilinear back
to pixels): about half a second for a 24 MP photo on a 2-core CPU, not the tens of seconds of a
129-tap filter, and within 1.5 % (8 px) / 0.5 % (16 px) RMS of the exact filter on kodim01.
"""

from __future__ import annotations

import numpy as np

#: Standard deviation (px) of the Gaussian whose low-pass of the input is kept: for photos whose
#: luma noise is correlated (denoised through pixel-shuffle), and for the others (stride 1),
#: whose noise is fine-grained. Real pairs (all PD2): 37.51 / 37.52 / 37.52 dB at 8 / 12 / 16 px;
#: stride 1, Kodak JPEG q92 4:2:0 at sigma 5 / 15 / 25 (12 images): +0.12 / +0.15 / +0.16 dB at
#: 8 px against +0.07 / +0.11 / +0.14 at 16.
SIGMA = 16.0
SIGMA_FINE = 8.0
#: At stride 1 on photos whose chroma noise alone is correlated (a JPEG's 4:2:0 chroma), where the
#: real-photo model smooths fine detail away at low noise: all 24 Kodak, Gaussian sigma 5 / 15 / 25
#: as JPEG q92 4:2:0 (srgb-camera's route), +0.11 / +0.07 / -0.005 dB at 4 px against 8 (the same on
#: both halves of the 24; 3 px: +0.18 / +0.08 / -0.07); the blind model there 29.45 at both.
SIGMA_CHROMA = 4.0
#: Raws, in packed (2x2-cell) pixels, after the noise guard: bench/raw_synthetic.py (24 Kodak
#: mosaics and the colour chart at low / mid / high ISO) gained at every level at 6-8 px (Kodak
#: +0.14 / +0.05 / +0.04 dB at 8, better on 24 of 24 each; the chart +0.56 / +0.61 / +0.35);
#: 2-4 px gained more at low ISO and lost on the chart at high ISO.
SIGMA_RAW = 8.0
#: Side of the cells the low-pass is computed on.
CELL = 4


def _gaussian_rows(a: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian down the rows (axis 0) with mirrored edges (radius 3 sigma)."""
    r = max(1, int(np.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = (k / k.sum()).astype(np.float32)
    n = a.shape[0]
    idx = np.mod(np.arange(-r, n + r), 2 * n)
    p = a[np.where(idx >= n, 2 * n - 1 - idx, idx)]  # symmetric mirror, as scipy's "reflect"
    out = k[0] * p[:n]
    for j in range(1, k.size):
        out += k[j] * p[j:j + n]
    return out


def _upsample_rows(a: np.ndarray, cell: int) -> np.ndarray:
    """Bilinear from cell centres to ``cell`` pixels per cell down the rows (edges held)."""
    m = a.shape[0]
    p = np.concatenate([a[:1], a, a[-1:]])  # p[j + 1] is cell j
    out = np.empty((m * cell,) + a.shape[1:], np.float32)
    for phase in range(cell):
        d = (phase + 0.5) / cell - 0.5  # offset from its cell's centre, in cells
        lo, f = (0, 1 + d) if d < 0 else (1, d)
        out[phase::cell] = p[lo:lo + m] * np.float32(1 - f) + p[lo + 1:lo + 1 + m] * np.float32(f)
    return out


def low_pass(a: np.ndarray, sigma: float = SIGMA, cell: int = CELL) -> np.ndarray:
    """About a Gaussian of ``sigma`` px over an HxWxC array, computed on ``cell`` x ``cell`` cells."""
    h, w, c = a.shape
    cell = max(1, min(cell, int(sigma // 2)))  # cells no wider than half the Gaussian
    hc, wc = -(-h // cell), -(-w // cell)
    p = a.astype(np.float32, copy=False)
    if (hc * cell, wc * cell) != (h, w):
        p = np.pad(p, ((0, hc * cell - h), (0, wc * cell - w), (0, 0)), mode="edge")
    cells = p.reshape(hc, cell, wc * cell, c).sum(1).reshape(hc, wc, cell, c).sum(2) / np.float32(cell * cell)
    s = sigma / cell
    cells = _gaussian_rows(np.ascontiguousarray(_gaussian_rows(cells, s).transpose(1, 0, 2)), s)  # W x H x C
    if cell == 1:
        return np.ascontiguousarray(cells.transpose(1, 0, 2))
    rows = np.ascontiguousarray(_upsample_rows(cells, cell)[:w].transpose(1, 0, 2))  # H/cell x W x C
    return _upsample_rows(rows, cell)[:h]


def keep_local_mean(noisy: np.ndarray, denoised: np.ndarray, sigma: float = SIGMA) -> np.ndarray:
    """``denoised`` with the low-pass of what it removed from ``noisy`` added back."""
    return (denoised + low_pass(noisy.astype(np.float32) - denoised, sigma)).astype(np.float32)

