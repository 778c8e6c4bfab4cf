"""Raw model quality: held-out synthetic raws at three noise levels, and the real colour chart.

1. Kodak24 (not in the training set) unprocessed to camera mosaics (one seeded random camera per
   image, ``n2ncli.synthesis.packed_mosaic``), packed R, G1, G2, B, with heteroscedastic noise at
   three exposures across Brooks et al.'s calibrated range (shot 2e-4 / 2e-3 / 1e-2, read on the
   calibration line): low, mid and high ISO. PSNR on the packed linear values (peak 1), as
   raw benchmarks (SIDD raw) score, for the noisy input and the model's output clipped to [0, 1].
   Each model is scored bare and as ``n2n denoise`` runs it: its change kept within the noise
   measured on the input (``n2ncli.noise_guard``), then the input's local mean given back over
   ``local_mean.SIGMA_RAW`` packed pixels (and with the mean alone, as ``--no-noise-guard``).
2. ../shared/data/raw/colorchart.dng (Canon, RGGB, low ISO): the same three noise levels added to
   its normalised mosaic; PSNR against the file's own mosaic. With ``--crops DIR``, LibRaw's
   developments (noisy / denoised / the file) of a crop are written there as PNG.

    python bench/raw_synthetic.py --model raw-camera [--model runs/raw-camera/models/raw-camera] [--crops docs/img]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from n2ncli.backends.torch import TorchPredictor  # noqa: E402
from n2ncli.bayer import pack, unpack  # noqa: E402
from n2ncli.denoise import TileOptions, denoise_array  # noqa: E402
from n2ncli.io.image import list_images, read_image  # noqa: E402
from n2ncli.io.raw import read_raw, render  # noqa: E402
from n2ncli.nets.unet import UNet, bayer_from_rgb  # noqa: E402
from n2ncli.store import build_model, find_model  # noqa: E402
from n2ncli.local_mean import SIGMA_RAW, keep_local_mean  # noqa: E402
from n2ncli.noise_guard import keep_within_noise  # noqa: E402
from n2ncli.synthesis import CameraParams, heteroscedastic, packed_mosaic, read_for  # noqa: E402

LEVELS = {"low ISO": 2e-4, "mid ISO": 2e-3, "high ISO": 1e-2}
KODAK = ROOT.parent / "shared" / "data" / "kodak24"
CHART = ROOT.parent / "shared" / "data" / "raw" / "colorchart.dng"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * math.log10(1.0 / float(np.mean((np.clip(a, 0, 1) - b) ** 2)))


def kodak_mosaics(seed: int = 7, scale: int = 1) -> list[np.ndarray]:
    """Kodak24 as clean packed mosaics; ``scale`` 2 upsamples first (bicubic), so a 2x2 cell sees
    what one pixel of the photo does: the smoother detail per pixel of a real 20+ MP sensor."""
    out = []
    for i, path in enumerate(list_images(KODAK)):
        img = read_image(path).to_float()
        srgb = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]
        if scale > 1:
            srgb = torch.nn.functional.interpolate(srgb, scale_factor=scale, mode="bicubic").clamp(0, 1)
        p = CameraParams.draw(torch.Generator().manual_seed(seed * 1000 + i))
        out.append(packed_mosaic(srgb, p)[0].permute(1, 2, 0).numpy())
    return out


def noisy(clean: np.ndarray, shot: float, seed: int) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    return heteroscedastic(torch.from_numpy(clean), shot, read_for(shot), g).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", default=[], help="raw model name or folder (repeatable)")
    ap.add_argument("--warm-start", action="store_true", help="also score the untrained warm start (blind RGB -> 4 ch)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--crops", type=Path, default=None)
    ap.add_argument("--chart-only", action="store_true", help="only the colour chart rows (and --crops)")
    ap.add_argument("--no-guard", action="store_true", help="score the bare models only (no noise guard)")
    ap.add_argument("--scale", type=int, default=1, help="Kodak upsampled this much before mosaicking (1 or 2)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    nets = {}
    for spec in args.model:
        record = find_model(spec)
        nets[f"{record.name} ({record.training.get('steps', '?')} steps)"] = build_model(record)
    if args.warm_start:
        net = UNet(4)
        net.load_state_dict(bayer_from_rgb(build_model(find_model("srgb-gaussian5-50")).state_dict()))
        nets["warm start (untrained)"] = net.eval()
    bare = {k: TorchPredictor(v, "cpu") for k, v in nets.items()}
    preds = {k: (p, False, False) for k, p in bare.items()}
    if not args.no_guard:  # each model also as denoise runs it: its change kept within the noise,
        for k, p in bare.items():  # then the input's local mean given back (and the mean alone)
            preds.update({f"{k} + local mean": (p, False, True), f"{k} + noise guard": (p, True, False),
                          f"{k} + noise guard + local mean": (p, True, True)})

    def run(entry: tuple[TorchPredictor, bool, bool], y: np.ndarray) -> np.ndarray:
        out = denoise_array(y, entry[0], opts)
        out = keep_within_noise(y, out) if entry[1] else out
        return keep_local_mean(y, out, SIGMA_RAW) if entry[2] else out

    opts = TileOptions(tile=512)
    clean = [] if args.chart_only else kodak_mosaics(scale=args.scale)
    print(f"| set | level | shot | noisy | {' | '.join(preds)} |")
    print("| --- | --- | --- | --- |" + " --- |" * len(preds))
    for level, shot in LEVELS.items() if clean else ():
        scores = {k: [] for k in ["noisy", *preds]}
        for i, c in enumerate(clean):
            y = noisy(c, shot, 100 + i)
            scores["noisy"].append(psnr(y, c))
            for k, p in preds.items():
                scores[k].append(psnr(run(p, y), c))
        cells = " | ".join(f"{np.mean(scores[k]):.2f}" for k in ["noisy", *preds])
        print(f"| Kodak24 unprocessed (24){' x2' if args.scale == 2 else ''} | {level} | {shot:g} | {cells} |", flush=True)
    raw = read_raw(CHART)
    chart, layout = pack(raw.normalised(), raw.pattern)
    for level, shot in LEVELS.items():
        y = noisy(chart, shot, 5)
        outs = {k: run(p, y) for k, p in preds.items()}
        cells = " | ".join([f"{psnr(y, np.clip(chart, 0, 1)):.2f}"] +
                           [f"{psnr(o, np.clip(chart, 0, 1)):.2f}" for o in outs.values()])
        print(f"| colorchart.dng | {level} | {shot:g} | {cells} |", flush=True)
        if args.crops and level == "high ISO":
            from PIL import Image

            def develop(packed: np.ndarray) -> np.ndarray:
                rgb = render(CHART, raw.with_visible(raw.to_dn(unpack(packed, layout))))
                h, w = rgb.shape[:2]
                crop = rgb[h // 2 - 160: h // 2 + 160, w // 2 - 240: w // 2 + 240]
                return (crop.astype(np.float32) / 257).round().astype(np.uint8)

            args.crops.mkdir(parents=True, exist_ok=True)
            Image.fromarray(develop(y)).save(args.crops / "raw-chart-noisy.png", optimize=True)
            Image.fromarray(develop(chart)).save(args.crops / "raw-chart-file.png", optimize=True)
            for k, o in outs.items():
                name = k.split(" ")[0] + ("-guarded" if preds[k][1] else "") + ("-mean" if preds[k][2] else "")
                Image.fromarray(develop(np.clip(o, 0, None))).save(args.crops / f"raw-chart-{name}.png", optimize=True)


if __name__ == "__main__":
    main()
