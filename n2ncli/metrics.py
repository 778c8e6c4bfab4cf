"""PSNR and SSIM exactly as the paper's evaluation computes them, so our numbers compare to theirs.

The protocol (see ``shared/paper/reference-protocol.md``): clamp the float output to [0, 1],
quantise with ``uint8(x*255 + 0.5)``, then PSNR (peak 255) and MATLAB-style SSIM on the uint8
images. Everything here is numpy in float64; only :func:`psnr_torch` (training-time validation)
touches torch, and imports it lazily so evaluation code does not pay for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from n2ncli.errors import ConfigError

if TYPE_CHECKING:
    import torch

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
_BAND_ELEMENTS = 16384  # output rows x width per SSIM band; ~1.5 MB of float64 moments


@dataclass(frozen=True)
class PsnrSsim:
    """One image's scores: PSNR in dB (``inf`` when identical) and mean SSIM in [-1, 1]."""

    psnr: float
    ssim: float


def quantize_uint8(x: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] (any shape) -> uint8 as the reference: ``uint8(clip(x)*255 + 0.5)``.

    Arithmetic stays in the input's float precision (float32 in, float32 maths), because that is
    what the reference code does and it decides ties at the 0.5/255 boundaries bit for bit.
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    scaled = np.clip(x, 0.0, 1.0) * x.dtype.type(255.0)
    scaled += x.dtype.type(0.5)
    # Non-negative, so the truncating cast is floor(); the max is 255.5 -> 255.
    return scaled.astype(np.uint8)


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ConfigError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.size == 0:
        raise ConfigError(f"cannot score an empty image of shape {a.shape}")
    return a, b


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """PSNR in dB over all elements, in float64; identical images give ``math.inf``."""
    a, b = _check_pair(a, b)
    diff = a.astype(np.float64) - b.astype(np.float64)
    mse = float(np.mean(diff * diff))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse)


def _gaussian_1d(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian; its outer product is MATLAB's ``fspecial('gaussian', 11, 1.5)``."""
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(r * r) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray, axis: int) -> np.ndarray:
    """'valid' correlation of ``x`` with the symmetric kernel ``g`` along ``axis`` (float64).

    The kernel is symmetric, so taps k and n-1-k share one multiply: six passes, not eleven.
    """
    k = g.size
    n = x.shape[axis] - k + 1

    def part(start: int) -> np.ndarray:
        index = [slice(None)] * x.ndim
        index[axis] = slice(start, start + n)
        return x[tuple(index)]

    mid = k // 2
    out = part(mid) * g[mid]
    tmp = np.empty_like(out)
    for j in range(mid):
        np.add(part(j), part(k - 1 - j), out=tmp)
        tmp *= g[j]
        out += tmp
    return out


def _ssim_plane(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    """Mean SSIM of one HxW float64 plane pair (H, W >= 11)."""
    c1 = (SSIM_K1 * peak) ** 2
    c2 = (SSIM_K2 * peak) ** 2
    g = _gaussian_1d()
    halo = SSIM_WINDOW - 1
    h, w = a.shape
    out_h, out_w = h - halo, w - halo
    # Bands of output rows small enough that the five moment maps stay in cache: about 3x
    # faster than filtering whole planes, and memory stays O(band) instead of O(image).
    band = max(8, _BAND_ELEMENTS // w)
    total = 0.0
    for r0 in range(0, out_h, band):
        r1 = min(r0 + band, out_h)
        x = a[r0 : r1 + halo]
        y = b[r0 : r1 + halo]
        moments = np.stack([x, y, x * x, y * y, x * y])
        mu_a, mu_b, e_aa, e_bb, e_ab = _filter_valid(_filter_valid(moments, g, axis=1), g, axis=2)
        mu_aa = mu_a * mu_a
        mu_bb = mu_b * mu_b
        mu_ab = mu_a * mu_b
        num = (2.0 * mu_ab + c1) * (2.0 * (e_ab - mu_ab) + c2)
        den = (mu_aa + mu_bb + c1) * ((e_aa - mu_aa) + (e_bb - mu_bb) + c2)
        total += float((num / den).sum())
    return total / (out_h * out_w)


def ssim(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """MATLAB-style mean SSIM (Wang et al.'s ``ssim_index``, as BasicSR's ``calculate_ssim``).

    ``a``, ``b``: HxW, HxWx1 or HxWxC (normally uint8), compared in float64. Gaussian window
    11x11 with sigma 1.5, K1 = 0.01, K2 = 0.03, 'valid' filtering (the map loses 5 pixels per
    side), mean of the map; colour images are scored per channel and averaged.
    """
    a, b = _check_pair(a, b)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    if a.ndim != 3:
        raise ConfigError(f"SSIM needs an HxW or HxWxC image, got shape {a.shape}")
    h, w = a.shape[:2]
    if h < SSIM_WINDOW or w < SSIM_WINDOW:
        raise ConfigError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {h}x{w}")
    scores = [
        _ssim_plane(
            np.ascontiguousarray(a[..., c], dtype=np.float64),
            np.ascontiguousarray(b[..., c], dtype=np.float64),
            peak,
        )
        for c in range(a.shape[2])
    ]
    return float(np.mean(scores))


def score_uint8(clean_u8: np.ndarray, est_u8: np.ndarray) -> PsnrSsim:
    """PSNR and SSIM (peak 255) of two already-quantised images, HxW or HxWxC uint8.

    Rejects float input: scoring [0, 1] floats with peak 255 silently gives absurd PSNRs.
    """
    for name, arr in (("clean", clean_u8), ("estimate", est_u8)):
        dtype = np.asarray(arr).dtype
        if dtype != np.uint8:
            raise ConfigError(f"{name} image must be uint8 (use quantize_uint8), got {dtype}")
    return PsnrSsim(psnr=psnr(clean_u8, est_u8), ssim=ssim(clean_u8, est_u8))


def psnr_torch(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (peak 1) for training-time validation: NxCxHxW float in [0, 1] -> shape N.

    ``x`` (the network output) is clamped to [0, 1] first, as at evaluation; no quantisation, so
    this runs on the device and stays cheap. Identical images give ``inf``.
    """
    import torch

    if x.shape != y.shape:
        raise ConfigError(f"batches differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    if x.ndim < 2 or x.shape[0] == 0 or x[0].numel() == 0:
        raise ConfigError(f"psnr_torch needs a non-empty NxCxHxW batch, got {tuple(x.shape)}")
    diff = x.detach().clamp(0.0, 1.0) - y.detach()
    mse = diff.pow(2).flatten(1).mean(dim=1)
    return -10.0 * torch.log10(mse)
