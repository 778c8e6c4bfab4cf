"""The paper's evaluation protocol: fresh noise per repeat, uint8 quantisation, PSNR/SSIM.

From the official code (reference-protocol.md): noise added to the float image in [0,1] and not
clipped; output clamped, quantised as uint8(x*255 + 0.5); PSNR on uint8 with peak 255; SSIM
the MATLAB way, per channel, averaged; seed 101; Kodak repeated 10 times. The network sees each
image reflect-padded to a square (:class:`SquarePadded`), as their test code pads it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from n2ncli.backends import Predictor
from n2ncli.errors import DatasetError, IncompatibleModelError
from n2ncli.io.image import float_to_native, to_8bit
from n2ncli.metrics import quantize_uint8, psnr, ssim
from n2ncli.noise import NoiseSpec

PAPER_SEED = 101
#: The official test pads every image to a square whose side is a multiple of this (the U-Net's 2**5).
SQUARE_MULTIPLE = 32
#: The protocol's inference precision: the paper's figures are fp32 (fp16 on GPUs moves them).
PROTOCOL_PRECISION = "fp32"

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
    #: other methods on the same noisy draw: name -> {"psnr": dB, "ssim": ...}
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)


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

    @property
    def methods(self) -> list[str]:
        """Names of the baselines scored beside the model, in the order they ran."""
        return list(self.scores[0].baselines) if self.scores else []

    def baseline_mean(self, method: str, metric: str) -> float:
        return float(np.mean([s.baselines[method][metric] for s in self.scores]))

    def summary(self) -> dict[str, object]:
        paper = self.paper
        return {
            "dataset": self.dataset, "noise": self.noise, "repeats": self.repeats,
            "images": len({s.name for s in self.scores}),
            "psnr": self.mean("psnr"), "ssim": self.mean("ssim"),
            "noisy_psnr": self.mean("noisy_psnr"), "noisy_ssim": self.mean("noisy_ssim"),
            "paper_psnr": paper[0] if paper else None, "paper_ssim": paper[1] if paper else None,
            "baselines": {m: {"psnr": self.baseline_mean(m, "psnr"), "ssim": self.baseline_mean(m, "ssim")}
                          for m in self.methods},
        }


#: ``on_output(name, repeat, clean_u8, noisy, outputs)``: every denoised draw, outputs by method
#: ("model" and each baseline), HxWxC float32; the report keeps crops of some of them.
OutputHook = Callable[[str, int, np.ndarray, np.ndarray, dict[str, np.ndarray]], None]


def evaluate(predictor: Predictor, images: Sequence[tuple[str, np.ndarray]], noise: NoiseSpec,
             *, dataset: str = "custom", repeats: int = 1, seed: int = PAPER_SEED, batch: int = 1,
             with_ssim: bool = True, threads: int = 1,
             on_image: Callable[[int, int], None] | None = None,
             baselines: Mapping[str, Predictor] | None = None, on_output: OutputHook | None = None) -> EvalResult:
    """Score ``predictor`` on clean uint8 HxWxC ``images`` under ``noise``.

    Noise draws follow one generator seeded with ``seed``, image by image and repeat by repeat,
    so results are reproducible; repeats of one image are denoised ``batch`` at a time.
    ``baselines`` (name -> predictor) are scored on the very same noisy draws.
    """
    rng = np.random.default_rng(seed)
    result = EvalResult(dataset, noise.name, repeats)

    def draws():
        for name, clean_u8 in images:
            clean = clean_u8.astype(np.float32) / 255.0
            if clean.shape[2] != predictor.channels:
                clean = _match_channels(clean, predictor.channels)
                clean_u8 = _match_channels(clean_u8, predictor.channels)
            yield name, clean_u8, [noise.apply_numpy(clean, rng) for _ in range(repeats)]

    _score_all(result, predictor, draws(), len(images) * repeats, batch, with_ssim, threads, on_image,
               baselines or {}, on_output)
    return result


def evaluate_pairs(predictor: Predictor, pairs: Sequence[tuple[str, np.ndarray, np.ndarray]], *,
                   dataset: str = "pairs", with_ssim: bool = True, threads: int = 1,
                   on_image: Callable[[int, int], None] | None = None,
                   baselines: Mapping[str, Predictor] | None = None,
                   on_output: OutputHook | None = None) -> EvalResult:
    """Score ``predictor`` on real noisy/clean ``pairs``: (name, noisy HxWxC float32 in [0,1], clean uint8).

    Same quantisation and metrics as :func:`evaluate`; one "repeat" per pair, noise "real".
    """
    result = EvalResult(dataset, "real", 1)

    def draws():
        for name, noisy, clean_u8 in pairs:
            if noisy.shape[:2] != clean_u8.shape[:2]:
                raise DatasetError(f"{name}: noisy {noisy.shape[1]}x{noisy.shape[0]} and clean "
                                   f"{clean_u8.shape[1]}x{clean_u8.shape[0]} differ in size")
            noisy = _match_channels(noisy, predictor.channels)
            yield name, _match_channels(clean_u8, predictor.channels), [noisy]

    _score_all(result, predictor, draws(), len(pairs), 1, with_ssim, threads, on_image, baselines or {}, on_output)
    return result


def _score_all(result: EvalResult, predictor: Predictor, draws, total: int, batch: int, with_ssim: bool,
               threads: int, on_image: Callable[[int, int], None] | None, baselines: Mapping[str, Predictor],
               on_output: OutputHook | None) -> None:
    nan = float("nan")

    def pair(clean_u8: np.ndarray, est: np.ndarray) -> tuple[float, float]:
        est_u8 = quantize_uint8(est)
        return psnr(clean_u8, est_u8), ssim(clean_u8, est_u8) if with_ssim else nan

    def score(name: str, r: int, clean_u8: np.ndarray, outputs: dict[str, np.ndarray], noisy: np.ndarray) -> ImageScore:
        ours, noisy_s = pair(clean_u8, outputs["model"]), pair(clean_u8, noisy)
        others = {m: dict(zip(("psnr", "ssim"), pair(clean_u8, outputs[m]))) for m in baselines}
        return ImageScore(name, r, ours[0], ours[1], noisy_s[0], noisy_s[1], others)

    with ThreadPoolExecutor(max_workers=max(threads, 1)) as pool:  # metrics overlap the network
        futures = []
        done = 0
        for name, clean_u8, noisy in draws:
            for start in range(0, len(noisy), max(batch, 1)):
                chunk = np.stack(noisy[start:start + max(batch, 1)])
                outs = {"model": predictor.predict(chunk)}
                outs.update({m: b.predict(chunk) for m, b in baselines.items()})
                for k in range(len(chunk)):
                    outputs = {m: o[k] for m, o in outs.items()}
                    if on_output:
                        on_output(name, start + k, clean_u8, chunk[k], outputs)
                    futures.append(pool.submit(score, name, start + k, clean_u8, outputs, chunk[k]))
                done += len(chunk)
                if on_image:
                    on_image(done, total)
        result.scores.extend(fut.result() for fut in futures)


def square_side(height: int, width: int, multiple: int = SQUARE_MULTIPLE) -> int:
    """Side of the official test's padded square: ceil(max(H, W) / 32) * 32."""
    return -(-max(height, width) // multiple) * multiple


def pad_square(batch: np.ndarray, multiple: int = SQUARE_MULTIPLE) -> np.ndarray:
    """NxHxWxC reflect-padded on the bottom/right to the official square (see :func:`square_side`).

    numpy's 'reflect' (the edge pixel not repeated), as the official code pads with ``np.pad``;
    pads longer than the image (tiny crops) reflect again, as ``np.pad`` does.
    """
    _, h, w, _ = batch.shape
    side = square_side(h, w, multiple)
    if (h, w) == (side, side):
        return batch
    return np.pad(batch, ((0, 0), (0, side - h), (0, side - w), (0, 0)), mode="reflect")


class SquarePadded:
    """The official test's padding around any predictor: pad to the square, denoise, crop back.

    The U-Net (and so denoise) pads each axis separately, which leaves Kodak's 768x512 unpadded;
    the paper's figures were made on the square, which scores the shipped model +0.013 dB on
    Kodak sigma 25 (docs/models.md), so evaluation pads as they did.
    """

    def __init__(self, inner: Predictor, multiple: int = SQUARE_MULTIPLE) -> None:
        self.inner, self.multiple = inner, multiple
        self.channels = inner.channels

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """NxHxWxC float32 -> NxHxWxC float32, the inner predictor run on the padded square."""
        _, h, w, _ = batch.shape
        return np.ascontiguousarray(self.inner.predict(pad_square(batch, self.multiple))[:, :h, :w])


def _match_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """Grey images in an RGB set are replicated to 3 channels, as the paper does for Set14."""
    if img.shape[2] == 1 and channels == 3:
        return np.repeat(img, 3, axis=2)
    if img.shape[2] == 3 and channels == 1:
        raise IncompatibleModelError("a grey (1-channel) model cannot score colour images")
    return img


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """uint8, uint16 or float HxWxC -> uint8 (16-bit rounded to the nearest 8-bit value, float
    clipped to [0,1] first, as a float TIFF's values)."""
    if pixels.dtype.kind == "f":
        return float_to_native(pixels, 8)
    return pixels if pixels.dtype == np.uint8 else to_8bit(pixels)
