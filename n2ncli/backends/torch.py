"""PyTorch backend: inference mode, channels_last, reduced precision on GPUs."""

from __future__ import annotations

import numpy as np
import torch

from n2ncli.device import autocast_dtype, cpu_has_native_bf16
from n2ncli.nets.unet import UNet


class TorchPredictor:
    """Runs a U-Net on batches of HxWxC float32 images on one device.

    ``precision='auto'`` is fp16 on CUDA (its 10-bit mantissa keeps the error under 16-bit
    output's step), bf16 on CPUs with bf16 units (AVX-512 BF16, AMX: 1.3-1.45x ONNX Runtime
    fp32 for at most 0.015 dB on Kodak, docs/benchmarks.md) and fp32 on other CPUs, which
    emulate bf16. ``'bf16'`` runs the 1x1 output head in fp32 (bf16 there cost up to 0.095 dB
    at sigma 5). ``'fp16'`` on a CPU, which has no fp16 units, runs as bf16 or fp32 (``note``).
    ``compile`` runs the network through ``torch.compile`` (measured on a 2-core CPU: 38 s to
    compile a 256-px tile, then ~6 % faster; GPU gains unmeasured).
    """

    def __init__(self, model: UNet, device: torch.device | str = "cpu", precision: str = "auto",
                 channels_last: bool = True, compile: bool | str = False) -> None:  # noqa: A002 - torch's word
        self.device = torch.device(device)
        self.note = ""  # why the precision differs from the one asked for (the status line shows it)
        if precision == "auto":
            precision = {"cuda": "fp16", "cpu": "bf16" if cpu_has_native_bf16() else "fp32"}.get(self.device.type, "fp32")
            if precision == "bf16":
                self.note = "the CPU has bf16 units; --precision fp32 for full precision"
        elif precision == "fp16" and self.device.type == "cpu":
            precision = "bf16" if cpu_has_native_bf16() else "fp32"
            self.note = f"{precision}: CPUs have no fp16 units (fp16 ran ~10x slower)"
        self.amp = autocast_dtype(self.device, precision)
        self.precision = precision
        self.channels_last = channels_last
        self.model = model.to(self.device).eval()
        self.model.head_fp32 = precision == "bf16"
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.channels = model.in_channels
        # torch.compile: True for its default (inductor), or a backend name. Each new tile shape
        # compiles once (tens of seconds on a CPU), so it pays off for long folder runs on GPUs.
        self.compiled = compile
        self.net = torch.compile(self.model, backend=compile if isinstance(compile, str) else "inductor") \
            if compile else self.model

    @torch.inference_mode()
    def predict(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        x = x.permute(0, 3, 1, 2)  # NHWC memory viewed as NCHW is channels_last already
        x = x.contiguous(memory_format=torch.channels_last) if self.channels_last else x.contiguous()
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            y = self.net(x)
        return y.float().permute(0, 2, 3, 1).contiguous().cpu().numpy()
