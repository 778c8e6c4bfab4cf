"""The noise-structure tables of docs/real-noise.md: real pairs vs ``--noise camera``, and ``--pd auto``'s statistic.

    python bench/noise_stats.py --shared ../shared/data
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from n2ncli.datasets import find_pairs
from n2ncli.io.image import list_images, read_image
from n2ncli.pd import noise_correlation
from n2ncli.synthesis import CameraParams, camera_noise, camera_pair


def corr(r: np.ndarray, dy: int, dx: int) -> float:
    a, b = r[: r.shape[0] - dy, : r.shape[1] - dx], r[dy:, dx:]
    return float(((a - a.mean()) * (b - b.mean())).mean() / a.var())


def structure(r: np.ndarray) -> list[float]:
    """std (0-255), lag 1/2/3 correlation (rows, mean over channels), R-G and G-B correlation."""
    lags = [np.mean([corr(r[..., c], 0, k) for c in range(3)]) for k in (1, 2, 3)]
    cross = [np.corrcoef(r[..., a].ravel(), r[..., b].ravel())[0, 1] for a, b in ((0, 1), (1, 2))]
    return [r.std() * 255, *lags, *cross]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data")
    args = ap.parse_args()
    pairs = find_pairs(args.shared / "real-pairs")
    real = [(read_image(a).to_float().astype(np.float64), read_image(b).to_float().astype(np.float64))
            for _, a, b in pairs]
    print("| | std | lag 1 | lag 2 | lag 3 | R-G | G-B |")
    print("real pairs", np.round(np.mean([structure(n - c) for n, c in real], axis=0), 2))
    rows, shots = [], []
    for i, f in enumerate(list_images(args.shared / "cbsd432")[:40]):
        img = read_image(f).to_float()
        h, w = img.shape[:2]
        x = torch.from_numpy(img[: h // 2 * 2, : w // 2 * 2].transpose(2, 0, 1).copy())[None]
        g = torch.Generator().manual_seed(i)
        p = CameraParams.draw(g)
        noisy, ref = camera_pair(x, p, g)
        rows.append(structure((noisy - ref)[0].permute(1, 2, 0).numpy().astype(np.float64)))
        shots.append(p.shot)
    rows_a = np.array(rows)
    print("--noise camera", np.round(rows_a.mean(axis=0), 2),
          "shot < 2e-3:", np.round(rows_a[np.array(shots) < 2e-3].mean(axis=0), 2))
    bins = np.array([0, .1, .2, .3, .45, .6, .8, 1.0])
    level = [[] for _ in range(len(bins) - 1)]
    for n, c in real:
        r, lum = (n - c).mean(axis=2), c.mean(axis=2)
        for k in range(len(bins) - 1):
            m = (lum >= bins[k]) & (lum < bins[k + 1])
            if m.sum() > 2000:
                level[k].append(r[m].std() * 255)
    print("real noise std by brightness:", ", ".join(f"{bins[k]:.2f}-{bins[k + 1]:.2f} {np.median(v):.2f}"
                                                     for k, v in enumerate(level) if v))
    rng = np.random.default_rng(0)
    kodak = [read_image(p).to_float() for p in sorted((args.shared / "kodak24").glob("*.png"))]

    def q8(x: np.ndarray) -> np.ndarray:
        return np.clip(np.round(x * 255), 0, 255).astype(np.uint8)

    def jpeg(u8: np.ndarray, sub: int) -> np.ndarray:
        b = io.BytesIO()
        Image.fromarray(u8).save(b, format="JPEG", quality=92, subsampling=sub)
        return np.asarray(Image.open(b)).astype(np.float32) / 255

    table = {}
    for s in (0, 2, 5, 10, 15, 25, 50):
        table[f"Gaussian sigma {s}, PNG"] = [noise_correlation(q8(k + rng.normal(0, s / 255, k.shape)) / 255.) for k in kodak]
    for s in (5, 15):
        table[f"Gaussian sigma {s}, JPEG q92 4:2:0"] = [noise_correlation(jpeg(q8(k + rng.normal(0, s / 255, k.shape)), 2)) for k in kodak]
        table[f"Gaussian sigma {s}, JPEG q92 4:4:4"] = [noise_correlation(jpeg(q8(k + rng.normal(0, s / 255, k.shape)), 0)) for k in kodak]
    table["real pairs, noisy"] = [noise_correlation(n.astype(np.float32)) for n, _ in real]
    table["real pairs, mean shot"] = [noise_correlation(c.astype(np.float32)) for _, c in real]
    table["--noise camera (12 Kodak)"] = [
        noise_correlation(camera_noise(torch.from_numpy(k.transpose(2, 0, 1).copy())[None],
                                       torch.Generator().manual_seed(i))[0].permute(1, 2, 0).numpy())
        for i, k in enumerate(kodak[:12])]
    print("\n| input | min | median | max |\n| --- | --- | --- | --- |")
    for k, v in table.items():
        print(f"| {k} | {np.min(v):.3f} | {np.median(v):.3f} | {np.max(v):.3f} |")


if __name__ == "__main__":
    main()
