"""Synthetic noise models of the paper (Gaussian and Poisson, fixed or per-image range).

Noise is added to float images in [0, 1] and never clipped, as in the official protocol.
Names: ``gaussian25``, ``gaussian5-50``, ``poisson30``, ``poisson5-50``, ``gaussian:SIGMA``,
``gaussian:LO-HI``, ``poisson:LAMBDA``, ``poisson:LO-HI`` (sigma on the 0-255 scale, lambda on
intensities in [0, 1]), and for raw mosaics ``poisson-gaussian:A,B``: the heteroscedastic camera
model, variance ``A*x + B`` in normalised units (A: shot-noise gain, B: read-noise variance).
``jpeg`` (``jpeg:SIGMA``, ``jpeg:LO-HI``; default sigma 5-50) is Gaussian noise saved as a file:
clipped, 8-bit and, per image, JPEG 4:2:0, 4:4:4 or none at quality 75-98 (the noise of a
photo edited or shot without in-camera processing, then saved as JPEG: 4:2:0 chroma makes
its colour noise blotchy, correlated over 2x2 pixels and more). ``camera`` is real-camera
noise: each image is unprocessed to a raw mosaic, given sensor noise at a random ISO, developed
and saved as an 8-bit (often 4:2:0 JPEG) file by a random camera (``n2ncli.synthesis``): the noise is correlated between pixels and channels, as in real photos.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from n2ncli.errors import ConfigError

PRESETS = ("gaussian25", "gaussian5-50", "poisson30", "poisson5-50")  # the paper's (eval --noise all)
_PATTERN = re.compile(r"^(gaussian|poisson|jpeg)[:]?([0-9.]+)(?:-([0-9.]+))?$")
JPEG_DEFAULT = (5.0, 50.0)  # ``jpeg`` alone: the blind model's sigma range
_CAMERA_PATTERN = re.compile(r"^poisson-gaussian:([0-9.e+-]+),([0-9.e+-]+)$")


@dataclass(frozen=True)
class NoiseSpec:
    """Gaussian (level = sigma on 0-255) or Poisson (level = lambda), fixed if lo == hi;
    or poisson-gaussian with shot gain ``lo`` (= ``hi``) and read-noise variance ``read``;
    or jpeg (Gaussian sigma in [lo, hi] saved as an 8-bit file, JPEG settings drawn per image);
    or camera (levels unused: each image draws its own camera and ISO);
    or sensor (linear raw values, e.g. packed mosaics: each image draws its own shot and read
    variance from Brooks et al.'s calibration, ``n2ncli.synthesis.draw_sensor``)."""

    kind: str
    lo: float
    hi: float
    read: float = 0.0

    @property
    def name(self) -> str:
        def fmt(v: float) -> str:
            return f"{v:.12g}"
        if self.kind in ("camera", "sensor"):
            return self.kind
        if self.kind == "poisson-gaussian":
            return f"poisson-gaussian:{fmt(self.lo)},{fmt(self.read)}"
        level = fmt(self.lo) if self.lo == self.hi else f"{fmt(self.lo)}-{fmt(self.hi)}"
        if self.kind == "jpeg":
            return "jpeg" if (self.lo, self.hi) == JPEG_DEFAULT else f"jpeg:{level}"
        name = f"{self.kind}{level}"
        return name if name in PRESETS else f"{self.kind}:{level}"

    def levels(self, n: int, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu") -> torch.Tensor:
        """One level per image (N), uniform in [lo, hi]."""
        u = torch.rand(n, generator=generator, device=device)
        return self.lo + (self.hi - self.lo) * u

    def apply(self, clean: torch.Tensor,
              generator: torch.Generator | Sequence[torch.Generator] | None = None) -> torch.Tensor:
        """Noisy version of NxCxHxW ``clean`` in [0,1], a fresh draw (level per image).

        ``generator`` may be one generator per image: each image's noise then depends on its own
        generator alone, whichever batch (or process) it is drawn in.
        """
        if isinstance(generator, Sequence):
            if len(generator) != clean.shape[0]:
                raise ValueError(f"{len(generator)} generators for {clean.shape[0]} images")
            return torch.cat([self.apply(clean[i:i + 1], g) for i, g in enumerate(generator)])
        n = clean.shape[0]
        if self.kind == "camera":
            from n2ncli.synthesis import camera_noise

            return torch.cat([camera_noise(clean[i:i + 1], generator) for i in range(n)])
        if self.kind == "sensor":
            from n2ncli.synthesis import draw_sensor, heteroscedastic

            return torch.cat([heteroscedastic(clean[i:i + 1], *draw_sensor(generator), generator) for i in range(n)])
        if self.kind == "jpeg":
            return torch.cat([self._jpeg(clean[i:i + 1], generator, 1)[0] for i in range(n)])
        if self.kind == "poisson-gaussian":
            shot = torch.poisson(clean.clamp(min=0) / self.lo, generator=generator) * self.lo
            read = torch.randn(clean.shape, generator=generator, device=clean.device, dtype=clean.dtype)
            return shot + read * self.read**0.5
        lv = self.levels(n, generator, clean.device).view(n, 1, 1, 1)
        if self.kind == "gaussian":
            noise = torch.randn(clean.shape, generator=generator, device=clean.device, dtype=clean.dtype)
            return clean + noise * (lv / 255.0)
        return torch.poisson(clean.clamp(min=0) * lv, generator=generator) / lv

    def apply_twice(self, clean: torch.Tensor,
                    generators: Sequence[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
        """Two independent noisy draws of each image of ``clean`` with the same level (and, for
        ``camera``, the same camera, ISO and file settings): one generator per image."""
        if self.kind == "camera":
            from n2ncli.synthesis import CameraParams, camera_files

            pairs = [camera_files(clean[i:i + 1], CameraParams.draw(g), g, 2) for i, g in enumerate(generators)]
            return torch.cat([a for a, _ in pairs]), torch.cat([b for _, b in pairs])
        if self.kind == "sensor":
            from n2ncli.synthesis import draw_sensor, heteroscedastic

            draws = []
            for i, g in enumerate(generators):
                x, level = clean[i:i + 1], draw_sensor(g)
                draws.append((heteroscedastic(x, *level, g), heteroscedastic(x, *level, g)))
            return torch.cat([a for a, _ in draws]), torch.cat([b for _, b in draws])
        if self.kind == "jpeg":
            draws = [self._jpeg(clean[i:i + 1], g, 2) for i, g in enumerate(generators)]
            return torch.cat([a for a, _ in draws]), torch.cat([b for _, b in draws])
        if self.kind != "gaussian":
            raise ConfigError(f"independent targets are made for camera, sensor, jpeg and Gaussian noise, not {self.name}")
        draws = []
        for i, g in enumerate(generators):  # one level per image, shared by its two draws
            x = clean[i:i + 1]
            sigma = self.levels(1, g, x.device).view(1, 1, 1, 1) / 255.0
            draws.append(tuple(x + sigma * torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
                               for _ in range(2)))
        return torch.cat([a for a, _ in draws]), torch.cat([b for _, b in draws])

    def _jpeg(self, x: torch.Tensor, generator: torch.Generator | None, count: int) -> list[torch.Tensor]:
        """``count`` files of one 1x3xHxW image: one sigma and one encoding, independent noise."""
        from n2ncli.synthesis import jpeg_files

        return jpeg_files(x, float(self.levels(1, generator, x.device)), generator, count)

    def apply_numpy(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Noisy float32 copy of an HxWxC ``clean`` in [0,1] drawn from ``rng`` (evaluation)."""
        if self.kind == "sensor":
            from n2ncli.synthesis import draw_sensor, heteroscedastic

            g = torch.Generator().manual_seed(int(rng.integers(2**62)))
            return heteroscedastic(torch.from_numpy(clean.astype(np.float32)), *draw_sensor(g), g).numpy()
        if self.kind in ("camera", "jpeg"):
            g = torch.Generator().manual_seed(int(rng.integers(2**62)))
            t = torch.from_numpy(np.ascontiguousarray(clean.transpose(2, 0, 1), dtype=np.float32))[None]
            h, w = t.shape[-2:]
            out = self.apply(torch.nn.functional.pad(t, (0, w % 2, 0, h % 2), mode="replicate"), g)
            return out[0, :, :h, :w].permute(1, 2, 0).numpy().astype(np.float32)
        x = clean.astype(np.float64)
        if self.kind == "poisson-gaussian":
            y = rng.poisson(np.clip(x, 0, None) / self.lo) * self.lo + rng.normal(0.0, self.read**0.5, size=x.shape)
            return y.astype(np.float32)
        lv = rng.uniform(self.lo, self.hi) if self.lo != self.hi else self.lo
        if self.kind == "gaussian":
            y = x + rng.normal(0.0, lv / 255.0, size=x.shape)
        else:
            y = rng.poisson(np.clip(x, 0, None) * lv) / lv
        return y.astype(np.float32)


def parse_noise(text: str) -> NoiseSpec:
    """Parse a noise name; ConfigError quoting the bad value otherwise."""
    if text.strip().lower() in ("camera", "sensor"):
        return NoiseSpec(text.strip().lower(), 0.0, 0.0)
    if text.strip().lower() == "jpeg":
        return NoiseSpec("jpeg", *JPEG_DEFAULT)
    camera = _CAMERA_PATTERN.match(text.strip().lower())
    if camera:
        try:
            a, b = float(camera.group(1)), float(camera.group(2))
        except ValueError as exc:
            raise ConfigError(f"bad noise levels in {text!r}") from exc
        if not (a > 0 and b >= 0):
            raise ConfigError(f"poisson-gaussian needs A > 0 and B >= 0, got {text!r}")
        return NoiseSpec("poisson-gaussian", a, a, b)
    m = _PATTERN.match(text.strip().lower())
    if not m:
        raise ConfigError(
            f"unknown noise {text!r}: use one of {', '.join(PRESETS)}, camera, jpeg, sensor, gaussian:SIGMA, jpeg:SIGMA, "
            "poisson:LAMBDA "
            "or poisson-gaussian:A,B")
    kind, lo_s, hi_s = m.groups()
    try:
        lo = float(lo_s)
        hi = float(hi_s) if hi_s else lo
    except ValueError as exc:
        raise ConfigError(f"bad noise level in {text!r}") from exc
    if lo <= 0 or hi < lo:
        raise ConfigError(f"noise levels must be positive and increasing, got {text!r}")
    return NoiseSpec(kind, lo, hi)
