"""How much mirrored context each tile needs: tiled output against whole-image output.

    python bench/tile_context.py [--contexts 64 32 0]

Kodak images with Gaussian noise (sigma 25, seed 5), some upscaled 2x to have several tiles,
denoised whole (``--tile 0``) and in tiles with each context, ONNX Runtime on the CPU. Prints the
PSNR against the clean image and the largest and 99.99th-percentile difference to the whole-image
output, in units of 1/255. Each tile costs ((tile + 2 context) / tile)^2 of its pixels, so the
context is a trade between speed and seams. Writes nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from n2ncli.backends.select import make_predictor  # noqa: E402
from n2ncli.denoise import TileOptions, denoise_array  # noqa: E402
from n2ncli.metrics import psnr, quantize_uint8  # noqa: E402
from n2ncli.store import default_model  # noqa: E402

KODAK = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak24"
CASES = (("kodim19.png", 2, (512, 1024)), ("kodim05.png", 1, (256, 512)), ("kodim23.png", 2, (512,)))


def main() -> None:
    from PIL import Image

    ap = argparse.ArgumentParser()
    ap.add_argument("--contexts", type=int, nargs="+", default=[64, 32, 0])
    args = ap.parse_args()
    predictor = make_predictor(default_model("srgb"), "onnx", "cpu")
    print("| image | tile | context | PSNR (whole image) | max difference | 99.99th percentile |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, up, tiles in CASES:
        with Image.open(KODAK / name) as im:
            im = im.convert("RGB")
            clean = np.asarray(im.resize((im.width * up, im.height * up), Image.BICUBIC) if up > 1 else im)
        noisy = (clean / 255 + np.random.default_rng(5).normal(0, 25 / 255, clean.shape)).astype(np.float32)
        whole = denoise_array(noisy, predictor, TileOptions(tile=0))
        ref = psnr(clean, quantize_uint8(np.clip(whole, 0, 1)))
        label = f"{name} {clean.shape[1]}×{clean.shape[0]}"
        for tile in tiles:
            for ctx in args.contexts:
                out = denoise_array(noisy, predictor, TileOptions(tile=tile, context=ctx))
                d = np.abs(out - whole) * 255
                score = psnr(clean, quantize_uint8(np.clip(out, 0, 1)))
                print(f"| {label} | {tile} | {ctx} | {score:.3f} ({ref:.3f}) | {d.max():.2f} | "
                      f"{np.percentile(d, 99.99):.2f} |", flush=True)


if __name__ == "__main__":
    main()
