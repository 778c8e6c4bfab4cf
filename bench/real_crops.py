"""Side-by-side crops for docs/real-noise.md: noisy | n2n default | BM3D | clean, for three real pairs.

    python bench/real_crops.py ../shared/data/real-pairs --out docs/img
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from n2ncli.backends.torch import TorchPredictor
from n2ncli.baselines import BM3D
from n2ncli.datasets import find_pairs
from n2ncli.denoise import TileOptions, denoise_array
from n2ncli.io.image import read_image
from n2ncli.metrics import psnr, quantize_uint8
from n2ncli.pd import PdSelector
from n2ncli.store import build_model, find_model, trained_blend, trained_stride

#: One pair of each camera and ISO kind, chosen by name before looking at any result.
PICKS = ("Canon5D2_5_160_3200_chair_11", "Canon5D2_5_160_6400_circuit_3", "Sony_4-5_125_3200_plant_10")
CROP = 160


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pairs", type=Path)
    ap.add_argument("--out", type=Path, default=Path("docs/img"))
    ap.add_argument("--model", default="srgb-camera")
    ap.add_argument("--bm3d", type=float, default=10.0)
    args = ap.parse_args()
    torch.set_num_threads(2)
    record = find_model(args.model)
    ours = PdSelector(TorchPredictor(build_model(record), precision="fp32"), None, trained_stride(record),
                      blend=trained_blend(record))
    bm3d = BM3D(3, args.bm3d)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, noisy_path, clean_path in find_pairs(args.pairs):
        if name not in PICKS:
            continue
        noisy, clean = read_image(noisy_path).to_float(), read_image(clean_path).pixels
        out = quantize_uint8(denoise_array(noisy, ours.for_image(noisy), TileOptions(tile=0)))
        ref = quantize_uint8(bm3d.predict(noisy[None])[0])
        tiles = [quantize_uint8(noisy), out, ref, clean]
        scores = [psnr(clean, t) for t in tiles[:3]]
        y, x = (noisy.shape[0] - CROP) // 2, (noisy.shape[1] - CROP) // 2
        strip = np.concatenate([t[y:y + CROP, x:x + CROP] for t in tiles], axis=1)
        big = Image.fromarray(strip).resize((strip.shape[1] * 2, strip.shape[0] * 2), Image.NEAREST)
        target = args.out / f"real-{name}.png"
        big.save(target)
        print(f"{target}: noisy {scores[0]:.2f}, {record.name} {scores[1]:.2f}, BM3D sigma {args.bm3d:g} {scores[2]:.2f} dB "
              "(whole 512x512 pair)")


if __name__ == "__main__":
    main()
