"""Lower precision on CPU, speed and PSNR at three noise levels: int8 (ONNX Runtime static QDQ)
and bf16 (PyTorch autocast) against fp32.

    python bench/precision.py [--threads N] [--tile 512] [--reps 3] [--images 4] [--sigmas 5 25 50]
                              [--only TEXT ...]

Speed: megapixels of network input per second on one tile x tile input, best of ``--reps``
after a warm-up. Quality: ``n2ncli.evaluate.evaluate`` on the first ``--images`` Kodak images,
Gaussian noise at each sigma, one repeat, the same seed (so the same noise) for every variant.

int8 calibration: 32 noisy 256x256 crops of CBSD432 images (sigma drawn from 5-50, seeded), never
the scored images. Three int8 recipes, each a step further:
- ``MinMax``: ONNX Runtime's default ranges.
- ``equalised + MSE ranges``: cross-layer equalisation first (each conv's output channels scaled
  by (R/r_i)^0.5 and the consumers' input weights divided by it, exact in fp32 because LeakyReLU,
  max-pool, transposed conv and concat commute with positive per-channel scales), then for every
  quantised tensor the clipping range that minimises its own quantisation MSE on the calibration
  data, handed to ``quantize_static`` as its calibration cache.
- ``... fp32 head``: the same with the three 1x1 output convs left in float32.
Prints a markdown table. Writes only temp files.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_of, cpu_name  # noqa: E402
from n2ncli.backends.onnx import OnnxPredictor, physical_cores  # noqa: E402
from n2ncli.backends.torch import TorchPredictor  # noqa: E402
from n2ncli.evaluate import evaluate  # noqa: E402
from n2ncli.export import export_onnx  # noqa: E402
from n2ncli.nets.unet import UNet  # noqa: E402
from n2ncli.noise import parse_noise  # noqa: E402
from n2ncli.store import build_model, default_model  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
#: Producer -> (consumer, first input channel it feeds): every activation edge of the U-Net.
EDGES = {
    "enc_conv0": [("enc_conv1", 0)], "enc_conv1": [("enc_conv2", 0), ("dec_conv2a", 96)],
    "enc_conv2": [("enc_conv3", 0), ("dec_conv3a", 96)], "enc_conv3": [("enc_conv4", 0), ("dec_conv4a", 96)],
    "enc_conv4": [("enc_conv5", 0), ("dec_conv5a", 48)], "enc_conv5": [("enc_conv6", 0)],
    "enc_conv6": [("up5", 0)], "up5": [("dec_conv5a", 0)], "dec_conv5a": [("dec_conv5b", 0)],
    "dec_conv5b": [("up4", 0)], "up4": [("dec_conv4a", 0)], "dec_conv4a": [("dec_conv4b", 0)],
    "dec_conv4b": [("up3", 0)], "up3": [("dec_conv3a", 0)], "dec_conv3a": [("dec_conv3b", 0)],
    "dec_conv3b": [("up2", 0)], "up2": [("dec_conv2a", 0)], "dec_conv2a": [("dec_conv2b", 0)],
    "dec_conv2b": [("up1", 0)], "up1": [("dec_conv1a", 0)], "dec_conv1a": [("dec_conv1b", 0)],
    "dec_conv1b": [("nin_a", 0)], "nin_a": [("nin_b", 0)], "nin_b": [("nin_c", 0)],
}
HEAD_NODES = ["/nin_a/Conv", "/nin_b/Conv", "/nin_c/Conv", "/LeakyRelu_16", "/LeakyRelu_17", "/LeakyRelu_18"]


def _read(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def calibration_crops(n: int = 32, size: int = 256) -> list[np.ndarray]:
    """n noisy size x size crops (1x3xHxW float32) of CBSD432 images, sigma drawn from 5-50."""
    rng = np.random.default_rng(0)
    files = sorted((SHARED / "cbsd432").iterdir())
    crops = []
    for i in rng.choice(len(files), n, replace=False):
        img = _read(files[i]).astype(np.float32) / 255
        top, left = rng.integers(0, img.shape[0] - size + 1), rng.integers(0, img.shape[1] - size + 1)
        c = img[top:top + size, left:left + size]
        c = c + rng.normal(0, rng.uniform(5, 50) / 255, c.shape).astype(np.float32)
        crops.append(np.ascontiguousarray(c.transpose(2, 0, 1)[None]))
    return crops


def equalised(net: UNet, crops: list[np.ndarray], alpha: float = 0.5) -> UNet:
    """A copy of ``net`` with per-channel activation ranges evened out (same fp32 function)."""
    net = copy.deepcopy(net).eval()
    mods = dict(net.named_modules())
    lo: dict[str, torch.Tensor] = {}
    hi: dict[str, torch.Tensor] = {}

    def hook(name: str):  # noqa: ANN202
        def record(_m, _i, out: torch.Tensor) -> None:
            a = out if name.startswith("up") else F.leaky_relu(out, 0.2)
            mn, mx = a.amin(dim=(0, 2, 3)), a.amax(dim=(0, 2, 3))
            lo[name] = torch.minimum(lo[name], mn) if name in lo else mn
            hi[name] = torch.maximum(hi[name], mx) if name in hi else mx
        return record

    handles = [mods[n].register_forward_hook(hook(n)) for n in EDGES]
    with torch.inference_mode():
        for c in crops:
            net(torch.from_numpy(c))
    for h in handles:
        h.remove()
    width = {n: (hi[n] - lo[n]).clamp_min(1e-6) for n in EDGES}
    feeds = {c for cons in EDGES.values() for c, _ in cons}
    group = {c: max(float(width[p].max()) for p, cons in EDGES.items() if any(k == c for k, _ in cons)) for c in feeds}
    with torch.no_grad():
        for prod, cons in EDGES.items():
            scale = (max(group[c] for c, _ in cons) / width[prod]) ** alpha
            pm = mods[prod]
            pm.weight.mul_(scale.view(1, -1, 1, 1) if isinstance(pm, torch.nn.ConvTranspose2d) else scale.view(-1, 1, 1, 1))
            pm.bias.mul_(scale)
            for c, off in cons:
                w = mods[c].weight
                if isinstance(mods[c], torch.nn.ConvTranspose2d):
                    w[off:off + scale.numel()].div_(scale.view(-1, 1, 1, 1))
                else:
                    w[:, off:off + scale.numel()].div_(scale.view(1, -1, 1, 1))
    return net


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over the crops."""

    def __init__(self, name: str, crops: list[np.ndarray]) -> None:
        self._it = iter([{name: c} for c in crops])

    def get_next(self):  # noqa: ANN201
        return next(self._it, None)


def quantize(src: Path, target: Path, crops: list[np.ndarray], cache: Path, exclude: list[str] | None = None) -> Path:
    """Static int8 QDQ: per-channel int8 weights, uint8 activations; ranges from ``cache``
    (made with MinMax when it does not exist yet)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    name = onnx.load(str(src), load_external_data=False).graph.input[0].name
    quantize_static(str(src), str(target), _Reader(name, crops), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude or [],
                    calibration_cache_path=str(cache))
    return target


def mse_ranges(src: Path, crops: list[np.ndarray], minmax_cache: Path, target: Path, per_crop: int = 40000) -> Path:
    """A calibration cache whose range for every tensor in ``minmax_cache`` minimises that
    tensor's uint8 quantisation MSE over a sample of its calibration values."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    data = json.loads(minmax_cache.read_text())
    names = list(data["data"])
    model = onnx.load(str(src))
    have = {o.name for o in model.graph.output}
    model.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names if n not in have)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    outs = [o.name for o in session.get_outputs()]
    rng = np.random.default_rng(1)
    samples: dict[str, list[np.ndarray]] = {n: [] for n in outs}
    for c in crops:
        for n, v in zip(outs, session.run(None, {model.graph.input[0].name: c})):
            samples[n].append(v.ravel()[rng.integers(0, v.size, per_crop)])
    grid = [1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
    for n in names:
        x = np.concatenate(samples[n])
        lo0, hi0 = float(data["data"][n]["lowest"]["data"][0]), float(data["data"][n]["highest"]["data"][0])

        def err(lo: float, hi: float, x: np.ndarray = x) -> float:
            lo, hi = min(lo, 0.0), max(hi, 0.0)
            step = (hi - lo) / 255 or 1.0
            zero = np.round(-lo / step)
            return float(np.mean(((np.clip(np.round(x / step) + zero, 0, 255) - zero) * step - x) ** 2))

        _, lo, hi = min((err(lo0 * a, hi0 * b), lo0 * a, hi0 * b) for a in grid for b in grid)
        data["data"][n]["lowest"]["data"], data["data"][n]["highest"]["data"] = [lo], [hi]
    target.write_text(json.dumps(data))
    return target


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=physical_cores())
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--sigmas", type=int, nargs="+", default=[5, 25, 50])
    ap.add_argument("--only", nargs="+", default=None, help="run the variants whose name contains one of these")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    record = default_model("srgb")
    tmp = Path(tempfile.mkdtemp())
    crops = calibration_crops()
    fp32_path = export_onnx(record, tmp / "fp32.onnx")
    ort = {"providers": ["CPUExecutionProvider"], "threads": args.threads}

    def int8_minmax() -> OnnxPredictor:
        return OnnxPredictor(quantize(fp32_path, tmp / "mm.onnx", crops, tmp / "mm.json"), 3, **ort)

    def int8_tuned(exclude: list[str] | None) -> OnnxPredictor:
        eq = tmp / "eq.onnx"
        if not eq.exists():
            export_onnx(equalised(build_model(record), crops), eq)
            quantize(eq, tmp / "eq-mm.onnx", crops, tmp / "eq-mm.json")
            mse_ranges(eq, crops, tmp / "eq-mm.json", tmp / "eq-mse.json")
        target = tmp / f"eq-mse-{bool(exclude)}.onnx"
        return OnnxPredictor(quantize(eq, target, crops, tmp / "eq-mse.json", exclude), 3, **ort)

    def bf16(head_fp32: bool) -> TorchPredictor:
        p = TorchPredictor(build_model(record), "cpu", precision="bf16")
        p.model.head_fp32 = head_fp32
        return p

    builders = {
        "ONNX Runtime fp32": lambda: OnnxPredictor(fp32_path, 3, **ort),
        "ONNX Runtime int8, MinMax": int8_minmax,
        "ONNX Runtime int8, equalised + MSE ranges": lambda: int8_tuned(None),
        "ONNX Runtime int8, equalised + MSE ranges, fp32 head": lambda: int8_tuned(HEAD_NODES),
        "PyTorch fp32": lambda: TorchPredictor(build_model(record), "cpu", precision="fp32"),
        "PyTorch bf16, every layer": lambda: bf16(False),
        "PyTorch bf16, fp32 head (--precision bf16)": lambda: bf16(True),
    }
    chosen = {k: b for k, b in builders.items() if not args.only or any(o in k for o in args.only)}
    x = np.random.default_rng(0).random((1, args.tile, args.tile, 3), dtype=np.float32)
    images = [(f"kodim{i:02d}.png", _read(SHARED / "kodak24" / f"kodim{i:02d}.png")) for i in range(1, args.images + 1)]
    print(f"{cpu_name()}, {args.threads} threads, tile {args.tile}, Kodak first {args.images}\n")
    print("| variant | MP/s | " + " | ".join(f"PSNR sigma {s} (vs fp32)" for s in args.sigmas) + " |")
    print("| --- | --- |" + " --- |" * len(args.sigmas))
    ref: dict[int, float] = {}
    for name, build in chosen.items():
        p = build()
        p.predict(x)
        mps = args.tile * args.tile / 1e6 / best_of(lambda p=p: p.predict(x), args.reps)
        cells = []
        for s in args.sigmas:
            psnr = evaluate(p, images, parse_noise(f"gaussian:{s}"), dataset="kodak24", repeats=1).mean("psnr")
            ref.setdefault(s, psnr)
            cells.append(f"{psnr:.3f} ({psnr - ref[s]:+.3f})")
        print(f"| {name} | {mps:.3f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
