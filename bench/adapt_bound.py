"""How much could ``--adapt`` gain on real photos with a perfect noise model? An oracle bound.

Neighbor2Neighbor on the photo alone keeps correlated noise, so ``--adapt`` leaves such photos
alone. The other route is Recorrupted-to-Recorrupted (Pang et al., CVPR 2021): train
``f(y + a z) -> y - z / a`` with ``z`` drawn from the photo's own noise distribution. Here ``z``
is given the *true* noise's second-order statistics, cheating: each draw is the pair's
``noisy - mean shot`` with its Fourier phases randomised (the same random phase for the three
channels, so the spectrum and the cross-channel spectra are kept exactly). A real ``--adapt``
would have to estimate them from the photo, and would do worse.

One fine-tune over all the pairs' noisy images, warm-started from ``srgb-camera``, the loss on
the ``--pd auto`` output (half PD2, half plain), then every pair scored through that output.

    python bench/adapt_bound.py ../shared/data/real-pairs --steps 150
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from n2ncli.backends.torch import TorchPredictor
from n2ncli.datasets import find_pairs
from n2ncli.denoise import TileOptions, denoise_array
from n2ncli.io.image import read_image
from n2ncli.metrics import psnr, quantize_uint8
from n2ncli.pd import PdSelector, merge_torch, split_torch
from n2ncli.store import build_model, find_model, trained_blend


def phase_randomised(noise: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A stationary draw with the spectrum and cross-spectra of HxWxC ``noise``."""
    spectrum = np.fft.fft2(noise - noise.mean((0, 1)), axes=(0, 1))
    phase = np.angle(np.fft.fft2(rng.standard_normal(noise.shape[:2])))  # Hermitian: the draw stays real
    return np.real(np.fft.ifft2(spectrum * np.exp(1j * phase)[..., None], axes=(0, 1)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pairs", type=Path)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pairs = find_pairs(args.pairs)
    noisy = [read_image(a).to_float().astype(np.float64) for _, a, _ in pairs]
    noise = [y - read_image(b).to_float() for y, (_, _, b) in zip(noisy, pairs)]
    record = find_model("srgb-camera")
    blend = trained_blend(record)
    model = build_model(record).train()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = args.lr * 0.5 * (1 + np.cos(np.pi * step / args.steps))
        inputs, targets = [], []
        for _ in range(4):
            i = int(rng.integers(len(noisy)))
            z = phase_randomised(noise[i], rng)
            r, c = (int(rng.integers(0, s - args.crop + 1)) for s in noisy[i].shape[:2])
            y, z = noisy[i][r:r + args.crop, c:c + args.crop], z[r:r + args.crop, c:c + args.crop]
            inputs.append((y + args.alpha * z).transpose(2, 0, 1))
            targets.append((y - z / args.alpha).transpose(2, 0, 1))
        x = torch.tensor(np.stack(inputs), dtype=torch.float32)
        out = (1 - blend) * merge_torch(model(split_torch(x, 2)), 2) + blend * model(x)
        loss = (out - torch.tensor(np.stack(targets), dtype=torch.float32)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % 25 == 0:
            print(f"step {step + 1}/{args.steps} loss {float(loss):.6f} {time.perf_counter() - t0:.0f} s", flush=True)
    before = PdSelector(TorchPredictor(build_model(record), precision="fp32"), None, 2, blend=blend)
    after = PdSelector(TorchPredictor(model.eval(), precision="fp32"), None, 2, blend=blend)
    rows = []
    for (name, _, b), y in zip(pairs, noisy):
        clean, y32 = read_image(b).pixels, y.astype(np.float32)
        outs = [denoise_array(y32, p.for_image(y32), TileOptions(tile=0)) for p in (before, after)]
        scores = [psnr(clean, quantize_uint8(o)) for o in (y32, *outs)]
        rows.append(scores)
        print(name, " ".join(f"{s:.2f}" for s in scores), flush=True)
    noisy_db, before_db, after_db = np.mean(rows, axis=0)
    better = sum(r[2] > r[1] for r in rows)
    print(f"\n{len(rows)} pairs: noisy {noisy_db:.2f}, srgb-camera {before_db:.2f}, oracle R2R {after_db:.2f} "
          f"({after_db - before_db:+.2f}; better on {better})")


if __name__ == "__main__":
    main()
