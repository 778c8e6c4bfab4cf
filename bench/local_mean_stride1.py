"""The local mean kept at stride 1: which Gaussian, for JPEG 4:2:0 photos and for PNGs.

All 24 Kodak images with Gaussian noise (seed 2024), as JPEG q92 4:2:0 at sigma 5 / 15 / 25 (the
real-photo model's route as ``--pd auto`` takes it: stride 1, gated second pass) and as 8-bit PNG
at sigma 15 (the blind model, plain). Each route's output is computed once; the table gives its
PSNR with the input's local mean kept over each Gaussian (``n2ncli.local_mean``), the even and
odd images' means (a choice should hold on both halves), and on how many images each sigma beats 8 px.

    python bench/local_mean_stride1.py --data ../shared/data/kodak24
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from camera_jpeg import _jpeg  # noqa: E402

from n2ncli.backends.torch import TorchPredictor  # noqa: E402
from n2ncli.denoise import TileOptions, denoise_array  # noqa: E402
from n2ncli.io.image import read_image  # noqa: E402
from n2ncli.local_mean import keep_local_mean  # noqa: E402
from n2ncli.metrics import psnr, quantize_uint8  # noqa: E402
from n2ncli.pd import PdSelector  # noqa: E402
from n2ncli.store import build_model, find_model, trained_blend, trained_second_pass  # noqa: E402

SETS = {"JPEG q92 4:2:0, sigma 5": ("srgb-camera", 5, True), "JPEG q92 4:2:0, sigma 15": ("srgb-camera", 15, True),
        "JPEG q92 4:2:0, sigma 25": ("srgb-camera", 25, True), "PNG, sigma 15": ("srgb-gaussian5-50", 15, False)}
SIGMAS = (0, 3, 4, 5, 6, 8)  # 0: the route's output as it is


def _selector(name: str) -> PdSelector:
    record = find_model(name)
    return PdSelector(TorchPredictor(build_model(record), precision="fp32"), None, 2, blend=trained_blend(record),
                      second_pass=trained_second_pass(record), keep_mean=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/kodak24")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    selectors = {name: _selector(name) for name in dict.fromkeys(m for m, _, _ in SETS.values())}
    rng = np.random.default_rng(2024)
    scores: dict[str, dict[int, list[float]]] = {label: {s: [] for s in SIGMAS} for label in SETS}
    routes: dict[str, list[str]] = {label: [] for label in SETS}
    for path in sorted(args.data.glob("*.png")):
        clean = read_image(path).pixels
        x = clean.astype(np.float32) / 255
        for label, (model, sigma, jpeg) in SETS.items():
            u8 = np.clip(np.round((x + rng.normal(0, sigma / 255, x.shape)) * 255), 0, 255).astype(np.uint8)
            noisy = (_jpeg(u8, 92, 2) if jpeg else u8).astype(np.float32) / 255
            route = selectors[model].route(noisy)
            routes[label].append(type(route).__name__)
            out = denoise_array(noisy, route, TileOptions(tile=0))
            for s in SIGMAS:
                kept = out if s == 0 else keep_local_mean(noisy, out, s)
                scores[label][s].append(psnr(clean, quantize_uint8(kept)))
        print(f"{path.name} done", file=sys.stderr, flush=True)
    print("| input (24 Kodak) | route | " + " | ".join("as is" if s == 0 else f"{s} px" for s in SIGMAS) + " |")
    print("| --- " * (2 + len(SIGMAS)) + "|")
    for label in SETS:
        ref = np.array(scores[label][8])
        cells = []
        for s in SIGMAS:
            v = np.array(scores[label][s])
            cells.append(f"{v.mean():.3f} ({v[0::2].mean():.2f} / {v[1::2].mean():.2f}; {int((v > ref).sum())})")
        kinds = ", ".join(f"{k} {routes[label].count(k)}" for k in sorted(set(routes[label])))
        print(f"| {label} | {kinds} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
