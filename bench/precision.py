"""Lower precision on CPU: int8 (ONNX Runtime static QDQ quantization) and bf16 (PyTorch autocast)
against the fp32 ONNX Runtime model, for speed and for PSNR on Kodak.

    python bench/precision.py [--threads N] [--tile 512] [--reps 3] [--images 4] [--only TEXT ...]

Speed: megapixels of network input per second on one tile x tile input, best of ``--reps``
after a warm-up. Quality: PSNR/SSIM with ``n2ncli.evaluate.evaluate`` on the first ``--images``
Kodak images, Gaussian sigma 25, one repeat, same seed for every variant (so the same noise).
int8 calibration: MinMax over 8 noisy 256x256 crops taken from the *last* Kodak images, never
from the scored ones. Prints a markdown table. Writes only temp files.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_of, cpu_name  # noqa: E402
from n2ncli.backends.onnx import OnnxPredictor, physical_cores  # noqa: E402
from n2ncli.backends.torch import TorchPredictor  # noqa: E402
from n2ncli.evaluate import evaluate  # noqa: E402
from n2ncli.export import export_onnx  # noqa: E402
from n2ncli.noise import parse_noise  # noqa: E402
from n2ncli.store import build_model, default_model  # noqa: E402

KODAK = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak24"


def _kodak(names: list[str]) -> list[tuple[str, np.ndarray]]:
    from PIL import Image

    out = []
    for n in names:
        with Image.open(KODAK / n) as im:
            out.append((n, np.asarray(im.convert("RGB"))))
    return out


class _Calibration:
    """8 noisy 256x256 crops (sigma 25, seeded), NCHW float32, one per ``get_next``."""

    def __init__(self, input_name: str, images: list[np.ndarray]) -> None:
        rng = np.random.default_rng(0)
        crops = []
        for i, img in enumerate(images):
            for top, left in ((0, 0), (200, 300)):
                c = img[top:top + 256, left:left + 256].astype(np.float32) / 255
                c = c + rng.normal(0, 25 / 255, c.shape).astype(np.float32)
                crops.append({input_name: np.ascontiguousarray(c.transpose(2, 0, 1)[None])})
        self._it = iter(crops[:8])

    def get_next(self):  # noqa: ANN201 - onnxruntime's CalibrationDataReader protocol
        return next(self._it, None)


def quantize_int8(fp32: Path, target: Path, calibration: list[np.ndarray], keep_ends: bool = False) -> Path:
    """Static int8 QDQ model; ``keep_ends`` leaves the first and last convolutions in fp32."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    import onnx

    graph = onnx.load(str(fp32), load_external_data=False).graph
    name = graph.input[0].name
    convs = [n.name for n in graph.node if n.op_type == "Conv"]
    quantize_static(str(fp32), str(target), _Calibration(name, calibration), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    nodes_to_exclude=[convs[0], convs[-1]] if keep_ends else [])
    return target


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=physical_cores())
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--only", nargs="+", default=None, help="run the variants whose name contains one of these")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    record = default_model("srgb")
    tmp = Path(tempfile.mkdtemp())
    fp32_path = export_onnx(record, tmp / "fp32.onnx")
    calib = [img for _, img in _kodak([f"kodim{i:02d}.png" for i in (21, 22, 23, 24)])]
    ort = {"providers": ["CPUExecutionProvider"], "threads": args.threads}
    builders = {
        "ONNX Runtime fp32": lambda: OnnxPredictor(fp32_path, 3, **ort),
        "ONNX Runtime int8 (static QDQ, per-channel)":
            lambda: OnnxPredictor(quantize_int8(fp32_path, tmp / "int8.onnx", calib), 3, **ort),
        "ONNX Runtime int8, first and last conv fp32":
            lambda: OnnxPredictor(quantize_int8(fp32_path, tmp / "int8e.onnx", calib, keep_ends=True), 3, **ort),
        "PyTorch fp32": lambda: TorchPredictor(build_model(record), "cpu", precision="fp32"),
        "PyTorch bf16 autocast": lambda: TorchPredictor(build_model(record), "cpu", precision="bf16"),
    }
    variants = {k: b() for k, b in builders.items() if not args.only or any(o in k for o in args.only)}
    x = np.random.default_rng(0).random((1, args.tile, args.tile, 3), dtype=np.float32)
    images = _kodak([f"kodim{i:02d}.png" for i in range(1, args.images + 1)])
    noise = parse_noise("gaussian:25")
    print(f"{cpu_name()}, {args.threads} threads, tile {args.tile}, Kodak first {args.images}, sigma 25\n")
    print("| variant | MP/s | PSNR (dB) | vs first row | SSIM |")
    print("| --- | --- | --- | --- | --- |")
    ref = None
    for name, p in variants.items():
        p.predict(x)
        mps = args.tile * args.tile / 1e6 / best_of(lambda p=p: p.predict(x), args.reps)
        r = evaluate(p, images, noise, dataset="kodak24", repeats=1)
        psnr, ssim = r.mean("psnr"), r.mean("ssim")
        ref = psnr if ref is None else ref
        print(f"| {name} | {mps:.3f} | {psnr:.3f} | {psnr - ref:+.3f} | {ssim:.4f} |", flush=True)


if __name__ == "__main__":
    main()
