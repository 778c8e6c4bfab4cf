"""The paper's evaluation protocol: fresh noise per repeat, uint8 quantisation, PSNR/SSIM.

From the official code (reference-protocol.md): noise added to the float image in [0,1] and not
clipped; output clamped, quantised as uint8(x*255 + 0.5); PSNR on uint8 with peak 255; SSIM
the MATLAB way, per channel, averaged; seed 101; Kodak repeated 10 times.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from n2ncli.backends import Predictor
from n2ncli.errors import IncompatibleModelError
from n2ncli.metrics import quantize_uint8, psnr, ssim
from n2ncli.noise import NoiseSpec

PAPER_SEED = 101

#: The paper's Table 1 (Neighbor2Neighbor row): (dataset, noise) -> (PSNR, SSIM).
PAPER_TABLE1: dict[tuple[str, str], tuple[float, float]] = {
    ("kodak", "gaussian25"): (32.08, 0.879), ("bsd300", "gaussian25"): (30.79, 0.873),
    ("set14", "gaussian25"): (31.09, 0.864),
    ("kodak", "gaussian5-50"): (32.10, 0.870), ("bsd300", "gaussian5-50"): (30.73, 0.861),
    ("set14", "gaussian5-50"): (31.05, 0.858),
    ("kodak", "poisson30"): (31.44, 0.870), ("bsd300", "poisson30"): (29.86, 0.855),
    ("set14", "poisson30"): (30.29, 0.853),
    ("kodak", "poisson5-50"): (30.86, 0.855), ("bsd300", "poisson5-50"): (29.79, 0.838),
    ("set14", "poisson5-50"): (29.11, 0.836),
}


@dataclass(frozen=True)
class ImageScore:
    name: str
    repeat: int
    psnr: float
    ssim: float
    noisy_psnr: float
    noisy_ssim: float


@dataclass
class EvalResult:
    dataset: str
    noise: str
    repeats: int
    scores: list[ImageScore] = field(default_factory=list)

    def mean(self, attr: str) -> float:
        return float(np.mean([getattr(s, attr) for s in self.scores]))

    @property
    def paper(self) -> tuple[float, float] | None:
        return PAPER_TABLE1.get((self.dataset, self.noise))

    def summary(self) -> dict[str, object]:
        paper = self.paper
        return {
            "dataset": self.dataset, "noise": self.noise, "repeats": self.repeats,
            "images": len({s.name for s in self.scores}),
            "psnr": self.mean("psnr"), "ssim": self.mean("ssim"),
            "noisy_psnr": self.mean("noisy_psnr"), "noisy_ssim": self.mean("noisy_ssim"),
            "paper_psnr": paper[0] if paper else None, "paper_ssim": paper[1] if paper else None,
        }


def evaluate(predictor: Predictor, images: Sequence[tuple[str, np.ndarray]], noise: NoiseSpec,
             *, dataset: str = "custom", repeats: int = 1, seed: int = PAPER_SEED, batch: int = 1,
             with_ssim: bool = True, threads: int = 1,
             on_image: Callable[[int, int], None] | None = None) -> EvalResult:
    """Score ``predictor`` on clean uint8 HxWxC ``images`` under ``noise``.

    Noise draws follow one generator seeded with ``seed``, image by image and repeat by repeat,
    so results are reproducible; repeats of one image are denoised ``batch`` at a time.
    """
    rng = np.random.default_rng(seed)
    result = EvalResult(dataset, noise.name, repeats)
    total = len(images) * repeats
    nan = float("nan")

    def score(name: str, r: int, clean_u8: np.ndarray, est: np.ndarray, noisy: np.ndarray) -> ImageScore:
        est_u8, noisy_u8 = quantize_uint8(est), quantize_uint8(noisy)
        return ImageScore(name, r, psnr(clean_u8, est_u8), ssim(clean_u8, est_u8) if with_ssim else nan,
                          psnr(clean_u8, noisy_u8), ssim(clean_u8, noisy_u8) if with_ssim else nan)

    with ThreadPoolExecutor(max_workers=max(threads, 1)) as pool:  # metrics overlap the network
        futures = []
        for name, clean_u8 in images:
            clean = clean_u8.astype(np.float32) / 255.0
            if clean.shape[2] != predictor.channels:
                clean = _match_channels(clean, predictor.channels)
                clean_u8 = _match_channels(clean_u8, predictor.channels)
            noisy = [noise.apply_numpy(clean, rng) for _ in range(repeats)]
            for start in range(0, repeats, batch):
                out = predictor.predict(np.stack(noisy[start:start + batch]))
                for k, est in enumerate(out):
                    futures.append(pool.submit(score, name, start + k, clean_u8, est, noisy[start + k]))
        for done, fut in enumerate(futures, 1):
            result.scores.append(fut.result())
            if on_image:
                on_image(done, total)
    return result


def _match_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """Grey images in an RGB set are replicated to 3 channels, as the paper does for Set14."""
    if img.shape[2] == 1 and channels == 3:
        return np.repeat(img, 3, axis=2)
    if img.shape[2] == 3 and channels == 1:
        raise IncompatibleModelError("a grey (1-channel) model cannot score colour images")
    return img


def load_clean_images(paths: Sequence[Path], reader: Callable[[Path], np.ndarray]) -> list[tuple[str, np.ndarray]]:
    return [(p.name, reader(p)) for p in paths]
