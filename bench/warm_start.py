"""Warm start vs scratch: PSNR after N steps of `fit` on a small set of noisy photos.

The "user's photos" are Kodak images with Poisson noise (lambda=20): signal-dependent, unlike
the Gaussian noise the shipped model was trained on. Both runs train on those noisy images alone
and are scored on the same images against the clean originals (the way a user denoises the
folder they fitted on).

    python bench/warm_start.py [--steps 200] [--images 4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from n2ncli.backends.torch import TorchPredictor  # noqa: E402
from n2ncli.data import LoadedImages  # noqa: E402
from n2ncli.denoise import TileOptions, denoise_array  # noqa: E402
from n2ncli.io.image import read_image  # noqa: E402
from n2ncli.metrics import psnr, quantize_uint8  # noqa: E402
from n2ncli.noise import parse_noise  # noqa: E402
from n2ncli.store import build_model, default_model, load_state  # noqa: E402
from n2ncli.train import TrainConfig, train  # noqa: E402

KODAK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak24"


def score(model: torch.nn.Module, noisy: list[np.ndarray], clean: list[np.ndarray]) -> float:
    pred = TorchPredictor(model, "cpu")
    return float(np.mean([psnr(c, quantize_uint8(denoise_array(n, pred, TileOptions(tile=0))))
                          for n, c in zip(noisy, clean)]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--only-default", action="store_true", help="skip the from-scratch run")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    noise = parse_noise("poisson20")
    clean = [read_image(KODAK / f"kodim{i:02d}.png").pixels[:256, :384] for i in range(1, args.images + 1)]
    noisy = [np.clip(noise.apply_numpy(c.astype(np.float32) / 255, rng), 0, 1).astype(np.float32) for c in clean]
    as_u8 = tuple(np.ascontiguousarray(quantize_uint8(n).transpose(2, 0, 1)) for n in noisy)
    images = LoadedImages(as_u8, tuple(Path(f"{i}") for i in range(len(as_u8))), (), 255.0)
    shipped = default_model("srgb")
    print(f"noisy input: {np.mean([psnr(c, quantize_uint8(n)) for n, c in zip(noisy, clean)]):.2f} dB; "
          f"shipped {shipped.name} without fit: {score(build_model(shipped), noisy, clean):.2f} dB", flush=True)
    cfg = TrainConfig(steps=args.steps, batch_size=4, crop=args.crop, lr=args.lr, checkpoint_every=10**6)
    rows = []
    starts = [("--init default", load_state(shipped)), ("--init none", None)]
    for label, init in starts[:1] if args.only_default else starts:
        checkpoints: dict[int, float] = {}
        marks = sorted({args.steps // 4, args.steps // 2, args.steps})
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            for m in marks:  # train to each mark in one run, scoring on the way via separate runs is costly:
                c = TrainConfig(**{**cfg.to_dict(), "steps": m, "lr_milestones": cfg.lr_milestones})
                r = train(c, images, device=torch.device("cpu"), run_dir=Path(tmp) / str(m), init_state=init)
                checkpoints[m] = score(r.model, noisy, clean)
            seconds = time.perf_counter() - t
        rows.append((label, checkpoints, seconds))
        print(label, checkpoints, f"{seconds:.0f} s", flush=True)
    print("\n| start | " + " | ".join(f"PSNR after {m} steps" for m in rows[0][1]) + " |")
    print("| --- |" + " --- |" * len(rows[0][1]))
    for label, cps, _ in rows:
        print(f"| {label} | " + " | ".join(f"{v:.2f} dB" for v in cps.values()) + " |")


if __name__ == "__main__":
    main()
