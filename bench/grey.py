"""Greyscale photos and JPEG luma: the grey model against running the RGB models on three equal channels.

Each method runs the way ``n2n denoise`` picks models (``PdSelector`` as ``batch.load_models``
builds it), with and without the grey model ``grey-gaussian5-50``:

- Kodak24 as grey (BT.601 luma), Gaussian sigma 15 / 25 / 50 as float noise (the paper's
  protocol, stride 1) and sigma 25 as a clipped 8-bit PNG (what a user has);
- the luma of the real camera pairs (``--pairs``; PSNR on uint8 against the mean shot's luma),
  where ``--pd auto`` sees correlated noise;
- Kodak24 in colour with sigma 15 saved as JPEG q92 4:2:0 (``bench/camera_jpeg.py``'s set, seed
  101): ``srgb-camera`` plain (the default) and with its luma from the grey model
  (``n2ncli.luma.LumaFromGrey``).

    python bench/grey.py --data ../shared/data/kodak24 --pairs ../shared/data/real-pairs --threads 2
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from n2ncli.backends.torch import TorchPredictor
from n2ncli.datasets import find_pairs
from n2ncli.denoise import TileOptions, denoise_array, denoise_image_data
from n2ncli.io.image import ImageData, read_image
from n2ncli.luma import LumaFromGrey, luma
from n2ncli.pd import PdSelector
from n2ncli.store import build_model, find_model, trained_blend, trained_stride

ROOT = Path(__file__).resolve().parents[1]
WHOLE = TileOptions(tile=0)


def _psnr(clean: np.ndarray, out: np.ndarray) -> float:
    """PSNR of ``out`` quantised to 8 bits against float ``clean`` in [0, 1]."""
    q = np.clip(np.round(out * 255), 0, 255) / 255
    return float(10 * np.log10(1 / np.mean((q - clean) ** 2)))


def _jpeg420(u8: np.ndarray) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=92, subsampling=2)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")).astype(np.float32) / 255


def _denoise_grey(img: np.ndarray, selector: PdSelector) -> np.ndarray:
    """HxWx1 float through ``denoise_image_data`` (the CLI's path for a grey photo)."""
    data = ImageData(img.astype(np.float32), 32, None, None, Path("grey"))
    return denoise_image_data(data, selector, WHOLE)[..., 0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/kodak24")
    ap.add_argument("--pairs", type=Path, default=ROOT.parent / "shared/data/real-pairs")
    ap.add_argument("--grey", default="grey-gaussian5-50", help="the grey model (name or folder)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="first N images of each set only (a quick check)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    def load(spec: str):  # noqa: ANN202
        record = find_model(spec)
        return record, TorchPredictor(build_model(record), precision="fp32")

    (br, blind), (cr, camera), (_, grey) = load("srgb-gaussian5-50"), load("srgb-camera"), load(args.grey)

    def selector(with_grey: bool) -> PdSelector:
        return PdSelector(blind, None, trained_stride(br), camera, trained_stride(cr), blend=trained_blend(br),
                          correlated_blend=trained_blend(cr), grey=grey if with_grey else None)

    before, after = selector(False), selector(True)
    cut = slice(None, args.limit or None)
    colour = [read_image(p).pixels.astype(np.float32) / 255 for p in sorted(args.data.glob("*.png"))][cut]
    print(f"| input | images | noisy | RGB models on 3 equal channels (before) | `{args.grey}` (now) |")
    print("| --- | --- | --- | --- | --- |")

    def row(label: str, pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
        scores = np.array([(_psnr(c, n[..., 0]), _psnr(c, _denoise_grey(n, before)), _psnr(c, _denoise_grey(n, after)))
                           for c, n in pairs]).mean(axis=0)
        print(f"| {label} | {len(pairs)} | " + " | ".join(f"{s:.2f}" for s in scores) + " |", flush=True)

    greys = [luma(c[None])[0, ..., 0] for c in colour]
    for sigma in (15, 25, 50):
        rng = np.random.default_rng(101)
        row(f"Kodak24 grey, sigma {sigma}, float",
            [(g, (g + rng.normal(0, sigma / 255, g.shape))[..., None].astype(np.float32)) for g in greys])
    rng = np.random.default_rng(101)
    row("Kodak24 grey, sigma 25, 8-bit PNG",
        [(g, np.clip(np.round((g + rng.normal(0, 25 / 255, g.shape)) * 255), 0, 255)[..., None].astype(np.float32) / 255)
         for g in greys])
    pairs = [(read_image(a).to_float(), read_image(b).to_float()) for _, a, b in find_pairs(args.pairs)][cut]
    row("real pairs, luma", [(luma(m[None])[0, ..., 0], luma(n[None])[0]) for n, m in pairs])

    rng = np.random.default_rng(101)
    jpegs = []
    for c in colour:  # camera_jpeg.py's draws: sigma 15 for the PNG/JPEG, then sigma 25 for the protocol
        jpegs.append(_jpeg420(np.clip(np.round((c + rng.normal(0, 15 / 255, c.shape)) * 255), 0, 255).astype(np.uint8)))
        rng.normal(0, 25 / 255, c.shape)
    both = LumaFromGrey(camera, grey)
    scores = np.array([(_psnr(c, j), _psnr(c, denoise_array(j, camera, WHOLE)), _psnr(c, denoise_array(j, both, WHOLE)))
                       for c, j in zip(colour, jpegs)]).mean(axis=0)
    print(f"\n| Kodak24 colour, sigma 15, JPEG q92 4:2:0 ({len(jpegs)}) | noisy | `srgb-camera` plain (the default) "
          f"| with luma from `{args.grey}` |\n| --- | --- | --- | --- |\n| PSNR | "
          + " | ".join(f"{s:.2f}" for s in scores) + " |")


if __name__ == "__main__":
    main()
