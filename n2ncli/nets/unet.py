"""The Laine et al. U-Net exactly as Neighbor2Neighbor's official code builds it.

48 features, five 2x max-pools, 2x2 transposed-conv upsampling with skip concatenation, three
1x1 convs at the end, LeakyReLU(0.2), no batch norm, no residual (the output is the clean image).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from n2ncli.nets import DEPTH_MULTIPLE

_SLOPE = 0.2


def pad_to_multiple(x: torch.Tensor, multiple: int = DEPTH_MULTIPLE) -> tuple[torch.Tensor, int, int]:
    """Reflect-pad NxCxHxW on the bottom/right to a multiple; returns (padded, H, W) to crop back.

    Reflection needs the pad to be smaller than the side; tiny images fall back to replication.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, h, w


def _conv(cin: int, cout: int, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2, bias=True)


class UNet(nn.Module):
    """Neighbor2Neighbor's U-Net: ``in_channels`` -> ``out_channels``, any spatial size.

    Input NxCxHxW float (sRGB in [0,1], or packed raw mosaics); the input is padded internally
    to a multiple of 32 and the output cropped back, so callers never pad. ``head_fp32`` runs
    the three 1x1 output convs in float32 inside an autocast region: 6 % of the FLOPs, but in
    bf16 most of its error, since their output is the image itself (docs/benchmarks.md).
    """

    head_fp32: bool = False

    def __init__(self, in_channels: int = 3, out_channels: int | None = None, features: int = 48,
                 init: str = "torch") -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        f, f2 = features, 2 * features
        self.in_channels, self.out_channels, self.features = in_channels, out_channels, features
        self.enc_conv0 = _conv(in_channels, f)
        self.enc_conv1 = _conv(f, f)
        self.enc_conv2 = _conv(f, f)
        self.enc_conv3 = _conv(f, f)
        self.enc_conv4 = _conv(f, f)
        self.enc_conv5 = _conv(f, f)
        self.enc_conv6 = _conv(f, f)
        self.up5 = nn.ConvTranspose2d(f, f, 2, stride=2)
        self.dec_conv5a = _conv(f2, f2)
        self.dec_conv5b = _conv(f2, f2)
        self.up4 = nn.ConvTranspose2d(f2, f2, 2, stride=2)
        self.dec_conv4a = _conv(f2 + f, f2)
        self.dec_conv4b = _conv(f2, f2)
        self.up3 = nn.ConvTranspose2d(f2, f2, 2, stride=2)
        self.dec_conv3a = _conv(f2 + f, f2)
        self.dec_conv3b = _conv(f2, f2)
        self.up2 = nn.ConvTranspose2d(f2, f2, 2, stride=2)
        self.dec_conv2a = _conv(f2 + f, f2)
        self.dec_conv2b = _conv(f2, f2)
        self.up1 = nn.ConvTranspose2d(f2, f2, 2, stride=2)
        self.dec_conv1a = _conv(f2 + in_channels, f2)
        self.dec_conv1b = _conv(f2, f2)
        self.nin_a = _conv(f2, f2, 1)
        self.nin_b = _conv(f2, f2, 1)
        self.nin_c = _conv(f2, out_channels, 1)
        if init == "official":
            self.official_init_()
        elif init != "torch":
            raise ValueError(f"unknown init {init!r} (use 'torch' or 'official')")

    def official_init_(self) -> None:
        """The official code's init: Kaiming-normal (fan_in, leaky 0.2) x 0.1, zero biases.

        Kept for reproducing the paper; PyTorch's default init learns much faster early on
        (measured, see docs/models.md), so it is the default.
        """
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, a=_SLOPE, mode="fan_in", nonlinearity="leaky_relu")
                m.weight.data.mul_(0.1)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, h, w = pad_to_multiple(x)
        # In place when no gradient is recorded: every activation's input is a fresh conv
        # output, and not allocating one more full-size tensor per layer is 15-19 % faster on a
        # CPU at 256-1024 px tiles (memory traffic, docs/benchmarks.md).
        inplace = not torch.is_grad_enabled()
        act = lambda t: F.leaky_relu(t, _SLOPE, inplace=inplace)  # noqa: E731
        pool = lambda t: F.max_pool2d(t, 2)  # noqa: E731
        p1 = pool(act(self.enc_conv1(act(self.enc_conv0(x)))))
        p2 = pool(act(self.enc_conv2(p1)))
        p3 = pool(act(self.enc_conv3(p2)))
        p4 = pool(act(self.enc_conv4(p3)))
        p5 = pool(act(self.enc_conv5(p4)))
        d = act(self.enc_conv6(p5))
        d = torch.cat([self.up5(d), p4], dim=1)
        d = act(self.dec_conv5b(act(self.dec_conv5a(d))))
        d = torch.cat([self.up4(d), p3], dim=1)
        d = act(self.dec_conv4b(act(self.dec_conv4a(d))))
        d = torch.cat([self.up3(d), p2], dim=1)
        d = act(self.dec_conv3b(act(self.dec_conv3a(d))))
        d = torch.cat([self.up2(d), p1], dim=1)
        d = act(self.dec_conv2b(act(self.dec_conv2a(d))))
        d = torch.cat([self.up1(d), x], dim=1)
        d = act(self.dec_conv1b(act(self.dec_conv1a(d))))
        fp32 = self.head_fp32 and torch.is_autocast_enabled(d.device.type)
        with torch.autocast(d.device.type, enabled=False) if fp32 else contextlib.nullcontext():
            d = self.nin_c(act(self.nin_b(act(self.nin_a(d.float() if fp32 else d)))))
        return d[..., :h, :w]


def count_parameters(model: nn.Module) -> int:
    """Trainable parameter count (1,259,475 for the 3->3 U-Net)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def gflop_per_megapixel(in_channels: int = 3) -> float:
    """Floating-point operations (2 per multiply-add) per megapixel of input, for throughput."""
    flops = 0.0
    for name, m in UNet(in_channels).named_modules():
        if not isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            continue
        if name.startswith("enc_conv"):
            level = max(int(name[-1]) - 1, 0)  # conv k runs after k-1 poolings
        elif name.startswith("dec_conv"):
            level = int(name[8]) - 1
        elif name.startswith("up"):
            level = int(name[2])  # one 2x2 kernel per pixel of the coarser input
        else:
            level = 0
        macs = m.in_channels * m.out_channels * math.prod(m.kernel_size)
        flops += 2 * macs * 1e6 / 4**level
    return flops / 1e9


def bayer_from_rgb(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A 3->3 U-Net's weights as a 4->4 one for packed R, G1, G2, B mosaics (a warm start).

    The packed mosaic is a half-size RGB image with green seen twice: each green input weight is
    split between G1 and G2 (so G1 = G2 = G gives the same features), and the green output row
    is copied to both. Every other layer is kept as it is.
    """
    out = dict(state)

    def split_inputs(w: torch.Tensor, first: int) -> torch.Tensor:  # input channels first..first+2 are R, G, B
        r, g, b = w[:, first], w[:, first + 1], w[:, first + 2]
        return torch.cat([w[:, :first], torch.stack([r, g / 2, g / 2, b], dim=1), w[:, first + 3:]], dim=1)

    out["enc_conv0.weight"] = split_inputs(state["enc_conv0.weight"], 0)
    skip = state["dec_conv1a.weight"]
    out["dec_conv1a.weight"] = split_inputs(skip, skip.shape[1] - 3)  # the input image is concatenated last
    w, b = state["nin_c.weight"], state["nin_c.bias"]
    out["nin_c.weight"] = torch.cat([w[:1], w[1:2], w[1:2], w[2:]])
    out["nin_c.bias"] = torch.cat([b[:1], b[1:2], b[1:2], b[2:]])
    return out


def grey_from_rgb(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A 3->3 U-Net's weights as a 1->1 one for grey images (a warm start).

    It computes exactly what the RGB network gives a grey image repeated to three equal
    channels, averaged back to one: the input weights of R, G and B are summed (in the first
    conv and in the skip that concatenates the input), the three output rows averaged.
    """
    out = dict(state)

    def summed(w: torch.Tensor, first: int) -> torch.Tensor:  # input channels first..first+2 are R, G, B
        return torch.cat([w[:, :first], w[:, first:first + 3].sum(dim=1, keepdim=True), w[:, first + 3:]], dim=1)

    out["enc_conv0.weight"] = summed(state["enc_conv0.weight"], 0)
    skip = state["dec_conv1a.weight"]
    out["dec_conv1a.weight"] = summed(skip, skip.shape[1] - 3)
    out["nin_c.weight"] = state["nin_c.weight"].mean(dim=0, keepdim=True)
    out["nin_c.bias"] = state["nin_c.bias"].mean(dim=0, keepdim=True)
    return out
