"""Camera-style JPEGs and the Gaussian check, for the blind and the real-photo model, in one run.

Kodak24 with Gaussian sigma 15 (seed 101), saved as a PNG and as JPEG quality 92 with 4:2:0
chroma (what cameras and phones write), each denoised the way ``n2n denoise`` does by default
(``--pd auto``); and the paper protocol's Kodak sigma 25 (float noise, unclipped, one repeat),
which decides whether the real-photo model could replace the blind one for every photo.

    python bench/camera_jpeg.py --data ../shared/data/kodak24
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from n2ncli.backends.torch import TorchPredictor
from n2ncli.denoise import TileOptions, denoise_array
from n2ncli.io.image import read_image
from n2ncli.metrics import psnr, quantize_uint8
from n2ncli.pd import PdSelector
from n2ncli.store import build_model, find_model, trained_blend, trained_second_pass, trained_stride


def _jpeg(u8: np.ndarray, quality: int, subsampling: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=quality, subsampling=subsampling)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/kodak24")
    ap.add_argument("--models", default="srgb-gaussian5-50,srgb-camera")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(101)
    clean = [read_image(p).pixels for p in sorted(args.data.glob("*.png"))]
    sets: dict[str, list[np.ndarray]] = {"sigma 15, PNG": [], "sigma 15, JPEG q92 4:2:0": [], "sigma 25, float": []}
    for c in clean:
        x = c.astype(np.float32) / 255
        u8 = np.clip(np.round((x + rng.normal(0, 15 / 255, x.shape)) * 255), 0, 255).astype(np.uint8)
        sets["sigma 15, PNG"].append(u8.astype(np.float32) / 255)
        sets["sigma 15, JPEG q92 4:2:0"].append(_jpeg(u8, 92, 2).astype(np.float32) / 255)
        sets["sigma 25, float"].append((x + rng.normal(0, 25 / 255, x.shape)).astype(np.float32))
    print(f"| input ({len(clean)} Kodak images) | noisy | " + " | ".join(args.models.split(",")) + " |")
    print("| --- " * (2 + len(args.models.split(","))) + "|")
    predictors = {}
    for name in args.models.split(","):
        record = find_model(name)
        predictors[name] = PdSelector(TorchPredictor(build_model(record), precision="fp32"), None,
                                      trained_stride(record),
                                      blend=trained_blend(record), second_pass=trained_second_pass(record))
    for label, noisy in sets.items():
        scores = [np.mean([psnr(c, quantize_uint8(n)) for c, n in zip(clean, noisy)])]
        for name, predictor in predictors.items():
            # the protocol's float noise: stride 1, as `n2n eval` runs synthetic noise
            pred = predictor.inner if label.endswith("float") else None
            outs = [denoise_array(n, pred or predictor.for_image(n), TileOptions(tile=0)) for n in noisy]
            scores.append(np.mean([psnr(c, quantize_uint8(o)) for c, o in zip(clean, outs)]))
        print(f"| {label} | " + " | ".join(f"{s:.2f}" for s in scores) + " |", flush=True)


if __name__ == "__main__":
    main()
