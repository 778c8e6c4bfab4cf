"""Noise by scale, and what the default leaves of it: the band tables of docs/real-noise.md.

Splits a residual into difference-of-Gaussians bands (0-1, 1-2, 2-4, 4-8 and over 8 px) of luma
and chroma (BT.601 Y, Cb, Cr) and prints, per band:

- the noise's standard deviation (0-255) on the real pairs (noisy - mean shot) and on
  ``--noise camera`` (noisy file - noise-free development, 40 CBSD432 images);
- ``beta``: the share of each band's noise that the default route (srgb-camera through PD2
  averaged with half the plain pass) leaves, ``<error, noise> / <noise, noise>``, on the real
  pairs and on ``--noise camera`` at the pairs' level (12 Kodak images, shot 2e-3 and 4e-3).

    python bench/noise_bands.py --shared ../shared/data
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from n2ncli.backends.torch import TorchPredictor
from n2ncli.datasets import find_pairs
from n2ncli.denoise import TileOptions, denoise_array
from n2ncli.io.image import list_images, read_image
from n2ncli.pd import _YCC, PixelShufflePredictor
from n2ncli.store import build_model, find_model, trained_blend
from n2ncli.synthesis import CameraParams, camera_pair

SCALES = (0, 1, 2, 4, 8)
BANDS = ("0-1", "1-2", "2-4", "4-8", ">8")
ROWS = ("Y", "Cb", "Cr")


def bands(residual: np.ndarray) -> list[list[np.ndarray]]:
    """HxWx3 RGB residual -> [channel Y/Cb/Cr][band] difference-of-Gaussians images."""
    ycc = residual.astype(np.float64) @ _YCC.T.astype(np.float64)
    out = []
    for c in range(3):
        levels = [ycc[..., c] if s == 0 else gaussian_filter(ycc[..., c], s) for s in SCALES]
        out.append([levels[i] - levels[i + 1] for i in range(len(SCALES) - 1)] + [levels[-1]])
    return out


class Leftover:
    """Accumulates ``<error, noise>`` and ``<noise, noise>`` per channel and band."""

    def __init__(self) -> None:
        self.num = np.zeros((3, len(BANDS)))
        self.den = np.zeros((3, len(BANDS)))

    def add(self, noise: np.ndarray, error: np.ndarray) -> None:
        for c, (ns, es) in enumerate(zip(bands(noise), bands(error))):
            for b, (n, e) in enumerate(zip(ns, es)):
                self.num[c, b] += float((e * n).sum())
                self.den[c, b] += float((n * n).sum())

    def beta(self) -> np.ndarray:
        return self.num / self.den


def table(title: str, values: np.ndarray, fmt: str = "{:.2f}") -> None:
    print(f"\n{title}\n| | " + " | ".join(BANDS) + " |\n| --- |" + " --- |" * len(BANDS))
    for name, row in zip(ROWS, values):
        print(f"| {name} | " + " | ".join(fmt.format(v) for v in row) + " |")


def stds(residual: np.ndarray) -> np.ndarray:
    return np.array([[np.std(b) * 255 for b in ch] for ch in bands(residual)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    record = find_model("srgb-camera")
    route = PixelShufflePredictor(TorchPredictor(build_model(record), precision="fp32"), 2, blend=trained_blend(record))
    tiles = TileOptions(tile=0)

    def denoise(noisy: np.ndarray) -> np.ndarray:
        out = denoise_array(np.ascontiguousarray(noisy, dtype=np.float32), route, tiles)
        return np.round(np.clip(out, 0, 1) * 255) / 255

    real_std, real_left = [], Leftover()
    for _, a, b in find_pairs(args.shared / "real-pairs"):
        noisy, clean = read_image(a).to_float(), read_image(b).to_float().astype(np.float64)
        real_std.append(stds(noisy - clean))
        real_left.add(noisy - clean, denoise(noisy) - clean)
    syn_std = []
    for i, f in enumerate(list_images(args.shared / "cbsd432")[:40]):
        img = read_image(f).to_float()
        h, w = img.shape[:2]
        x = torch.from_numpy(img[: h // 2 * 2, : w // 2 * 2].transpose(2, 0, 1).copy())[None]
        g = torch.Generator().manual_seed(i)
        noisy, ref = camera_pair(x, CameraParams.draw(g), g)
        syn_std.append(stds((noisy - ref)[0].permute(1, 2, 0).numpy()))
    syn_left = Leftover()
    for i, f in enumerate(sorted((args.shared / "kodak24").glob("*.png"))[:12]):
        x = torch.from_numpy(read_image(f).to_float().transpose(2, 0, 1).copy())[None]
        g = torch.Generator().manual_seed(100 + i)
        for shot in (2e-3, 4e-3):
            noisy, ref = camera_pair(x, CameraParams.draw(g, shot=shot), g)
            y, c = noisy[0].permute(1, 2, 0).numpy(), ref[0].permute(1, 2, 0).numpy().astype(np.float64)
            syn_left.add(y - c, denoise(y) - c)
    table("noise std (0-255), median over the 41 real pairs (noisy - mean shot)", np.median(real_std, axis=0))
    table("noise std (0-255), median over 40 CBSD432 images with --noise camera", np.median(syn_std, axis=0))
    table("share of the noise the default leaves (beta), real pairs", real_left.beta(), "{:.3f}")
    table("share of the noise the default leaves (beta), --noise camera at shot 2e-3 / 4e-3", syn_left.beta(), "{:.3f}")


if __name__ == "__main__":
    main()
