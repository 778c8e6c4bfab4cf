"""GPU denoise throughput of the sRGB U-Net (torch CUDA, fp16/bf16, channels_last).

    python bench/gpu_denoise.py   # prints MP/s for a 24 MP image, whole and in tiles
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from n2ncli.nets.unet import UNet, gflop_per_megapixel  # noqa: E402


@torch.inference_mode()
def timed(fn, reps: int = 5) -> float:
    fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    net = UNet(3).to(dev).eval().to(memory_format=torch.channels_last)
    h, w = 4000, 6016  # 24 MP
    mp = h * w / 1e6
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {gflop_per_megapixel():.0f} GFLOP/MP")
    for dtype in (torch.float16, torch.bfloat16):
        img = torch.rand(1, 3, h, w, device=dev).contiguous(memory_format=torch.channels_last)
        net_d = net.to(dtype)
        whole = timed(lambda: net_d(img.to(dtype)))
        print(f"{str(dtype)[6:]:9s} whole 24 MP: {whole * 1e3:7.1f} ms  {mp / whole:7.1f} MP/s  "
              f"{mp * gflop_per_megapixel() / whole / 1e3:6.1f} TFLOP/s", flush=True)
        for tile, batch in ((1024, 8), (2048, 4)):
            tiles = torch.rand(batch, 3, tile, tile, device=dev, dtype=dtype).contiguous(memory_format=torch.channels_last)
            t = timed(lambda: net_d(tiles))
            tmp = batch * tile * tile / 1e6
            print(f"{str(dtype)[6:]:9s} tiles {tile}x{batch}: {tmp / t:7.1f} MP/s", flush=True)
        del img
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
