"""Camera noise from clean sRGB: unprocess to a raw mosaic, add sensor noise, develop again.

The path of Brooks et al., "Unprocessing Images for Learned Raw Denoising" (CVPR 2019), with
the steps real sRGB files add on top (clip, 8-bit quantisation, sharpening, JPEG with 4:2:0 or
4:4:4 chroma). Real sRGB noise is correlated over 2-3 pixels and across channels because the
camera demosaics, mixes channels with its colour matrix and compresses; noise added to the
mosaic and developed by this module gets that structure for the same reasons.

- ``unprocess``: sRGB in [0,1] -> linear camera RGB -> Bayer mosaic (what the raw pipeline uses).
- ``sensor_noise``: heteroscedastic shot + read noise on linear values, variance ``shot*x + read``.
- ``develop``: mosaic -> demosaic (bilinear or Malvar-He-Cutler) -> white balance -> colour
  matrix -> gamma -> tone curve; then the JPEG engine's ``camera_nr`` and ``sharpen``, and
  ``encode`` (clip, 8 bits, JPEG).

Parameters are drawn per image from a ``torch.Generator`` (see ``CameraParams.draw``), so a
training run that is resumed draws the same images again. Arrays are NxCxHxW float32 tensors.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

#: XYZ -> camera matrices (D65, x10000) of Bayer cameras from dcraw/LibRaw's adobe_coeff table:
#: Canon EOS 5D Mark II, Canon EOS 80D, Nikon D800, Sony ILCE-7M2, Olympus E-M10, Olympus E-M1,
#: Panasonic DMC-GH4. Each image gets a random convex mix of them (as Brooks et al. do).
XYZ_TO_CAMERA = np.array([
    [4716, 603, -830, -7798, 15474, 2480, -1496, 1937, 6651],
    [7457, -671, -937, -4849, 12495, 2643, -1213, 2354, 5492],
    [7866, -2108, -555, -4869, 12483, 2681, -1176, 2069, 7501],
    [5271, -712, -347, -6153, 13653, 2763, -1601, 2366, 7242],
    [8380, -2630, -639, -2887, 10725, 2496, -627, 1427, 5438],
    [7687, -1984, -606, -4327, 11928, 2721, -1381, 2339, 6452],
    [7122, -2108, -512, -3155, 11201, 2231, -541, 1423, 5045],
], dtype=np.float64).reshape(-1, 3, 3) / 10000.0
#: linear sRGB (D65) -> XYZ.
SRGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]])

#: Brooks et al.'s joint calibration of shot and read noise over many ISO settings:
#: log(shot) ~ U[log 1e-4, log 1.2e-2]; log(read) = 2.18 log(shot) + 1.20 + N(0, 0.26).
SHOT_RANGE = (1e-4, 1.2e-2)
READ_SLOPE, READ_INTERCEPT, READ_SPREAD = 2.18, 1.20, 0.26
#: White-balance gains (Brooks et al., from their camera set): red U[1.9, 2.4], blue U[1.5, 1.9],
#: and an overall gain 1/N(0.8, 0.1) for exposure.
RED_GAIN, BLUE_GAIN, RGB_GAIN_MEAN, RGB_GAIN_SD = (1.9, 2.4), (1.5, 1.9), 0.8, 0.1
#: What the camera writes: JPEG 4:2:0 / 4:4:4 / lossless (8-bit PNG-like), quality U{75..98}.
JPEG_CHOICES = (("420", 0.5), ("444", 0.25), ("none", 0.25))
JPEG_QUALITY = (75, 98)
#: In-camera noise reduction, as JPEG engines do it: chroma (Cb, Cr) blurred with a Gaussian of
#: sigma U[3, 7] px, luma with sigma U[0.8, 2] px blended in at U[0.5, 1]. Real camera JPEGs
#: (the dev pairs) show residual noise correlated 0.69 / 0.41 / 0.32 at lags 1 / 2 / 3 and 0.63
#: across channels (camera chroma NR is strong: what is left is mostly luma). Without this step
#: the synthetic noise had 0.5 / 0.15 at lags 1 / 2 and about 0 across channels; with sigmas
#: U[1.5, 4] / U[0.6, 1.5] (srgb-camera's training) 0.68 / 0.42 / 0.27 and 0.45 across channels;
#: with these 0.65 / 0.41 / 0.28 and 0.66 (24 CBSD432 images, runs of bench/noise_stats.py's
#: statistic).
CHROMA_NR_SIGMA, LUMA_NR_SIGMA, LUMA_NR_MIX = (3.0, 7.0), (0.8, 2.0), (0.5, 1.0)
#: In-camera sharpening: unsharp mask (Gaussian sigma 1 px) with amount U[0.2, 0.8], half the images.
SHARPEN_P, SHARPEN_AMOUNT = 0.5, (0.2, 0.8)
DEMOSAICS = ("bilinear", "malvar")


@dataclass(frozen=True)
class CameraParams:
    """One image's camera: colour matrix, gains, noise, Bayer phase and the file's encoding."""

    rgb_to_camera: np.ndarray  # 3x3, rows sum to 1 (white stays white before white balance)
    red_gain: float
    blue_gain: float
    rgb_gain: float
    shot: float  # variance per unit of linear signal
    read: float  # variance at zero signal
    flip_y: bool  # Bayer phase: the mosaic is RGGB on the flipped image
    flip_x: bool
    demosaic: str
    chroma_sigma: float  # in-camera chroma noise reduction (Gaussian sigma, px)
    luma_sigma: float  # in-camera luma noise reduction (Gaussian sigma, px) ...
    luma_mix: float  # ... blended in at this weight
    sharpen: float  # unsharp-mask amount (0 = none)
    jpeg: str  # "420", "444" or "none"
    quality: int

    @classmethod
    def draw(cls, generator: torch.Generator | None = None, *, shot: float | None = None) -> "CameraParams":
        """Random parameters from ``generator`` (``shot`` fixes the noise level, read follows it)."""
        dev = generator.device if generator is not None else "cpu"
        u = torch.rand(16, generator=generator, dtype=torch.float64, device=dev).tolist()
        z = torch.randn(2, generator=generator, dtype=torch.float64, device=dev).tolist()
        e = torch.rand(len(XYZ_TO_CAMERA), generator=generator, dtype=torch.float64, device=dev).cpu().numpy()
        weights = -np.log(np.clip(e, 1e-12, None))
        xyz_to_cam = np.tensordot(weights / weights.sum(), XYZ_TO_CAMERA, axes=1)
        rgb_to_cam = xyz_to_cam @ SRGB_TO_XYZ
        rgb_to_cam = rgb_to_cam / rgb_to_cam.sum(axis=1, keepdims=True)
        if shot is None:
            lo, hi = math.log(SHOT_RANGE[0]), math.log(SHOT_RANGE[1])
            shot = math.exp(lo + (hi - lo) * u[0])
        read = read_for(shot, z[0])
        jpeg, quality = file_encoding(u[7], u[9])
        return cls(
            rgb_to_camera=rgb_to_cam,
            red_gain=RED_GAIN[0] + (RED_GAIN[1] - RED_GAIN[0]) * u[1],
            blue_gain=BLUE_GAIN[0] + (BLUE_GAIN[1] - BLUE_GAIN[0]) * u[2],
            rgb_gain=1.0 / max(RGB_GAIN_MEAN + RGB_GAIN_SD * z[1], 0.5),
            shot=shot, read=read, flip_y=u[3] < 0.5, flip_x=u[4] < 0.5,
            demosaic=DEMOSAICS[int(u[5] < 0.5)],
            chroma_sigma=CHROMA_NR_SIGMA[0] + (CHROMA_NR_SIGMA[1] - CHROMA_NR_SIGMA[0]) * u[10],
            luma_sigma=LUMA_NR_SIGMA[0] + (LUMA_NR_SIGMA[1] - LUMA_NR_SIGMA[0]) * u[11],
            luma_mix=LUMA_NR_MIX[0] + (LUMA_NR_MIX[1] - LUMA_NR_MIX[0]) * u[12],
            sharpen=(SHARPEN_AMOUNT[0] + (SHARPEN_AMOUNT[1] - SHARPEN_AMOUNT[0]) * u[8]) if u[6] < SHARPEN_P else 0.0,
            jpeg=jpeg, quality=quality,
        )

    @property
    def gains(self) -> tuple[float, float, float]:
        """Per-channel white-balance x exposure gains (R, G, B) the camera applies on develop."""
        return (self.red_gain * self.rgb_gain, self.rgb_gain, self.blue_gain * self.rgb_gain)


# ----------------------------------------------------------------------------- tone and gamma

def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0, 1)
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0, 1)
    return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x.clamp(min=1e-8) ** (1 / 2.4) - 0.055)


def smoothstep(x: torch.Tensor) -> torch.Tensor:
    """The global tone curve Brooks et al. fit to camera output."""
    x = x.clamp(0, 1)
    return 3 * x**2 - 2 * x**3


def inverse_smoothstep(y: torch.Tensor) -> torch.Tensor:
    y = y.clamp(0, 1)
    return 0.5 - torch.sin(torch.asin(1.0 - 2.0 * y) / 3.0)


# ----------------------------------------------------------------------------- mosaic

def _bayer_masks(h: int, w: int, device: torch.device) -> torch.Tensor:
    """3xHxW {0,1} masks of R, G, B on an RGGB mosaic."""
    m = torch.zeros(3, h, w, device=device)
    m[0, 0::2, 0::2] = 1
    m[1, 0::2, 1::2] = 1
    m[1, 1::2, 0::2] = 1
    m[2, 1::2, 1::2] = 1
    return m


def _flip(x: torch.Tensor, p: CameraParams) -> torch.Tensor:
    dims = [d for d, f in ((-2, p.flip_y), (-1, p.flip_x)) if f]
    return x.flip(dims) if dims else x


def unprocess(srgb: torch.Tensor, p: CameraParams) -> torch.Tensor:
    """1x3xHxW sRGB in [0,1] -> 1x1xHxW linear camera mosaic (RGGB on the image flipped by ``p``).

    Gains are inverted so that highlights do not clip on the way back (Brooks et al.'s safe
    inversion): near white the inverse gain fades to 1.
    """
    lin = srgb_to_linear(inverse_smoothstep(srgb))
    cam = torch.einsum("ij,njhw->nihw", torch.as_tensor(p.rgb_to_camera, dtype=lin.dtype, device=lin.device), lin)
    gains = torch.tensor(p.gains, dtype=lin.dtype, device=lin.device).view(1, 3, 1, 1)
    grey = cam.mean(dim=1, keepdim=True)
    inv = 1.0 / gains
    mask = ((grey - 0.9).clamp(min=0) / 0.1) ** 2
    safe = torch.maximum(mask + (1 - mask) * inv, inv)
    cam = (cam * safe).clamp(0, 1)
    cam = _flip(cam, p)
    masks = _bayer_masks(cam.shape[-2], cam.shape[-1], cam.device)
    return (cam * masks).sum(dim=1, keepdim=True)


def sensor_noise(mosaic: torch.Tensor, p: CameraParams, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mosaic + Gaussian noise of variance ``shot * x + read`` (the heteroscedastic sensor model)."""
    return heteroscedastic(mosaic, p.shot, p.read, generator)


def heteroscedastic(x: torch.Tensor, shot: float, read: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``x`` + Gaussian noise of variance ``shot * max(x, 0) + read`` (any shape, linear values)."""
    var = shot * x.clamp(min=0) + read
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return x + noise * var.sqrt()


def draw_sensor(generator: torch.Generator | None = None) -> tuple[float, float]:
    """(shot, read) of one exposure from Brooks et al.'s calibration (``SHOT_RANGE``, read from shot)."""
    dev = generator.device if generator is not None else "cpu"
    u = float(torch.rand(1, generator=generator, dtype=torch.float64, device=dev))
    z = float(torch.randn(1, generator=generator, dtype=torch.float64, device=dev))
    lo, hi = math.log(SHOT_RANGE[0]), math.log(SHOT_RANGE[1])
    shot = math.exp(lo + (hi - lo) * u)
    return shot, read_for(shot, z)


def read_for(shot: float, z: float = 0.0) -> float:
    """Read-noise variance that goes with ``shot`` (``z``: standard deviations off the calibration line)."""
    return math.exp(READ_SLOPE * math.log(shot) + READ_INTERCEPT + READ_SPREAD * z)


def packed_mosaic(srgb: torch.Tensor, p: CameraParams) -> torch.Tensor:
    """1x3xHxW sRGB (H, W even) -> 1x4xH/2xW/2 clean camera mosaic in R, G1, G2, B order
    (``n2ncli.bayer``'s canonical packing): what a raw model is trained on."""
    m = unprocess(srgb, p)
    return torch.cat([m[..., 0::2, 0::2], m[..., 0::2, 1::2], m[..., 1::2, 0::2], m[..., 1::2, 1::2]], dim=1)


# ----------------------------------------------------------------------------- demosaic

_BILINEAR_G = torch.tensor([[0, 1, 0], [1, 4, 1], [0, 1, 0]], dtype=torch.float32) / 4
_BILINEAR_RB = torch.tensor([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=torch.float32) / 4
# Malvar, He and Cutler (ICASSP 2004): gradient-corrected 5x5 kernels, /8.
_M_G = torch.tensor([[0, 0, -1, 0, 0], [0, 0, 2, 0, 0], [-1, 2, 4, 2, -1], [0, 0, 2, 0, 0], [0, 0, -1, 0, 0]])
_M_ROW = torch.tensor([[0, 0, .5, 0, 0], [0, -1, 0, -1, 0], [-1, 4, 5, 4, -1], [0, -1, 0, -1, 0], [0, 0, .5, 0, 0]])
_M_DIAG = torch.tensor([[0, 0, -1.5, 0, 0], [0, 2, 0, 2, 0], [-1.5, 0, 6, 0, -1.5], [0, 2, 0, 2, 0], [0, 0, -1.5, 0, 0]])
_MALVAR = torch.stack([_M_G, _M_ROW, _M_ROW.T, _M_DIAG]).float().unsqueeze(1) / 8


def demosaic(mosaic: torch.Tensor, method: str = "malvar") -> torch.Tensor:
    """Nx1xHxW RGGB mosaic (H, W even) -> Nx3xHxW camera RGB."""
    n, _, h, w = mosaic.shape
    masks = _bayer_masks(h, w, mosaic.device).to(mosaic.dtype)
    if method == "bilinear":
        kernels = torch.stack([_BILINEAR_RB, _BILINEAR_G, _BILINEAR_RB]).unsqueeze(1).to(mosaic)
        planes = F.pad(mosaic * masks.unsqueeze(0), (1, 1, 1, 1), mode="reflect")
        return F.conv2d(planes, kernels, groups=3)
    if method != "malvar":
        raise ValueError(f"unknown demosaic {method!r}")
    f = F.conv2d(F.pad(mosaic, (2, 2, 2, 2), mode="reflect"), _MALVAR.to(mosaic))
    g_at, row, col, diag = f[:, 0:1], f[:, 1:2], f[:, 2:3], f[:, 3:4]
    r_site, b_site = masks[0:1], masks[2:3]
    g_r_row = torch.zeros_like(r_site)  # green pixels on red rows (their horizontal neighbours are red)
    g_r_row[:, 0::2, 1::2] = 1
    g_b_row = masks[1:2] - g_r_row
    red = mosaic * r_site + row * g_r_row + col * g_b_row + diag * b_site
    green = mosaic * masks[1:2] + g_at * (r_site + b_site)
    blue = mosaic * b_site + row * g_b_row + col * g_r_row + diag * r_site
    return torch.cat([red, green, blue], dim=1)


# ----------------------------------------------------------------------------- develop

def develop(mosaic: torch.Tensor, p: CameraParams) -> torch.Tensor:
    """1x1xHxW linear mosaic -> 1x3xHxW sRGB in [0,1] (float, before the file's encoding)."""
    rgb = demosaic(mosaic, p.demosaic)
    rgb = rgb * torch.tensor(p.gains, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    rgb = rgb.clamp(0, 1)
    cam_to_rgb = torch.as_tensor(np.linalg.inv(p.rgb_to_camera), dtype=rgb.dtype, device=rgb.device)
    rgb = torch.einsum("ij,njhw->nihw", cam_to_rgb, rgb).clamp(0, 1)
    return _flip(smoothstep(linear_to_srgb(rgb)), p)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of NxCxHxW (reflected edges); sigma in pixels."""
    if sigma <= 0:
        return x
    r = max(1, int(math.ceil(3 * sigma)))
    k = torch.exp(-torch.arange(-r, r + 1, dtype=x.dtype, device=x.device) ** 2 / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


#: RGB -> YCbCr (BT.601, as JPEG), without offsets.
_YCC = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])


def camera_nr(srgb: torch.Tensor, p: CameraParams) -> torch.Tensor:
    """In-camera noise reduction: chroma blurred strongly, luma lightly (in YCbCr)."""
    m = _YCC.to(srgb)
    ycc = torch.einsum("ij,njhw->nihw", m, srgb)
    luma = ycc[:, :1]
    luma = (1 - p.luma_mix) * luma + p.luma_mix * gaussian_blur(luma, p.luma_sigma)
    ycc = torch.cat([luma, gaussian_blur(ycc[:, 1:], p.chroma_sigma)], dim=1)
    return torch.einsum("ij,njhw->nihw", torch.linalg.inv(m), ycc)


def sharpen(srgb: torch.Tensor, amount: float) -> torch.Tensor:
    """Unsharp mask with a Gaussian of sigma 1 px (the in-camera sharpening of JPEG engines)."""
    if amount <= 0:
        return srgb
    return srgb + amount * (srgb - gaussian_blur(srgb, 1.0))


def file_encoding(u_kind: float, u_quality: float) -> tuple[str, int]:
    """How a file is saved, from two uniforms in [0, 1): ``JPEG_CHOICES`` and ``JPEG_QUALITY``."""
    jpeg, acc = JPEG_CHOICES[-1][0], 0.0
    for name, p in JPEG_CHOICES:
        acc += p
        if u_kind < acc:
            jpeg = name
            break
    return jpeg, int(round(JPEG_QUALITY[0] + (JPEG_QUALITY[1] - JPEG_QUALITY[0]) * u_quality))


def draw_file_encoding(generator: torch.Generator | None = None) -> tuple[str, int]:
    """A random file encoding (JPEG 4:2:0 / 4:4:4 / none, and quality) from ``generator``."""
    dev = generator.device if generator is not None else "cpu"
    u = torch.rand(2, generator=generator, dtype=torch.float64, device=dev).tolist()
    return file_encoding(u[0], u[1])


def encode(srgb: torch.Tensor, jpeg: str, quality: int) -> torch.Tensor:
    """Clip, quantise to 8 bits and, unless ``jpeg`` is "none", JPEG-compress (PIL) with 4:2:0
    ("420") or 4:4:4 ("444") chroma at ``quality`` and decode: what the file holds."""
    from PIL import Image

    u8 = (srgb.clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    if jpeg != "none":
        buf = io.BytesIO()
        Image.fromarray(u8).save(buf, format="JPEG", quality=quality, subsampling=2 if jpeg == "420" else 0)
        u8 = np.array(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    out = torch.from_numpy(np.ascontiguousarray(u8)).to(srgb.device, torch.float32).permute(2, 0, 1)[None] / 255.0
    return out.to(srgb.dtype)


def camera_pair(clean: torch.Tensor, p: CameraParams,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(noisy file, clean reference) for a 1x3xHxW sRGB image in [0,1] (H, W even).

    The reference is the same camera's development of the noise-free mosaic, sharpened alike but
    neither quantised nor compressed (its in-camera noise reduction is applied too): what a perfect denoiser of this camera's file would return.
    """
    mosaic = unprocess(clean, p)
    reference = _engine(develop(mosaic, p), p).clamp(0, 1)
    return _file(mosaic, p, generator), reference


def _engine(srgb: torch.Tensor, p: CameraParams) -> torch.Tensor:
    """The JPEG engine's own steps on a development: noise reduction, then sharpening."""
    return sharpen(camera_nr(srgb, p), p.sharpen)


def _file(mosaic: torch.Tensor, p: CameraParams, generator: torch.Generator | None) -> torch.Tensor:
    """The file the camera writes for a fresh sensor-noise draw on ``mosaic``."""
    return encode(_engine(develop(sensor_noise(mosaic, p, generator), p), p), p.jpeg, p.quality)


def camera_files(clean: torch.Tensor, p: CameraParams, generator: torch.Generator | None, count: int) -> list[torch.Tensor]:
    """``count`` noisy files of one 1x3xHxW image by the same camera, with independent sensor noise
    (one unprocessing shared by all)."""
    mosaic = unprocess(clean, p)
    return [_file(mosaic, p, generator) for _ in range(count)]


def jpeg_files(clean: torch.Tensor, sigma: float, generator: torch.Generator | None, count: int,
               encoding: tuple[str, int] | None = None) -> list[torch.Tensor]:
    """``count`` files of one 1x3xHxW sRGB image with independent Gaussian noise of ``sigma``
    (0-255) added in sRGB, each clipped, quantised and saved with one encoding (drawn from
    ``generator`` unless given): noise independent between pixels, except what 4:2:0 chroma
    and the JPEG blocks make of it."""
    jpeg, quality = encoding or draw_file_encoding(generator)
    return [encode(clean + torch.randn(clean.shape, generator=generator, device=clean.device, dtype=clean.dtype)
                   * (sigma / 255.0), jpeg, quality) for _ in range(count)]


def camera_noise(clean: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Noisy 1x3xHxW sRGB file made from clean ``clean`` by a random camera (``CameraParams.draw``)."""
    p = CameraParams.draw(generator)
    return camera_pair(clean, p, generator)[0]
