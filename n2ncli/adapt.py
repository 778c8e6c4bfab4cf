"""``n2n denoise --adapt``: fine-tune the model on the photos being denoised, then denoise them.

Self-supervised, so the photos' own noise is the only training signal: a short, time-bounded
Neighbor2Neighbor run warm-started from the model, with the pixel-shuffle stride measured on
the photos. The fine-tune measures itself on the same photos (fixed crops and masks, the
self-check's loss) and is dropped, with the reason, when it did not lower that loss.

Photos whose luma noise is correlated (real camera JPEGs) are not fine-tuned at all: there the
loss cannot tell a better model from one that keeps noise, and on the 41 real pairs the
fine-tune lost 0.6 dB (38 of 41 pairs) while lowering it (n2ncli.selfcheck). A bound for a
noise-model route, Recorrupted-to-Recorrupted with the true noise's spectrum of each photo,
gained only 0.05 dB there (docs/real-noise.md).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from n2ncli.data import LoadedImages
from n2ncli.errors import ConfigError, ImageReadError
from n2ncli.fit import WARM_START_LR
from n2ncli.nets.unet import UNet
from n2ncli.pd import CORRELATED, CORRELATED_STRIDE, median_correlations
from n2ncli.selfcheck import SelfCheck, held_out_loss, loss_can_tell
from n2ncli.train import Progress, TrainConfig, train

ADAPT_CROP = 256
ADAPT_BATCH = 4
#: Photos a folder run adapts to (evenly spread over the folder): enough for its noise, bounded memory.
MAX_IMAGES = 16


@dataclass(frozen=True)
class Adapted:
    model: UNet  # the fine-tuned network, or the original when the check refused it
    steps: int
    seconds: float
    pd: int
    check: SelfCheck | None  # None: not fine-tuned, the photos' noise being correlated
    luma: float = 0.0  # the photos' median luma noise statistic

    @property
    def used(self) -> bool:
        return self.check is not None and self.check.passed

    @property
    def skipped(self) -> str:
        """Why there was no fine-tune ("" when there was one)."""
        return "correlated" if self.check is None else ""


def adapt(model: UNet, images: Sequence[np.ndarray], steps: int, *, max_seconds: float | None = None,
          device: torch.device | str = "cpu", seed: int = 0, correlations: tuple[float, float] | None = None,
          on_progress: Callable[[Progress], None] | None = None) -> Adapted:
    """Fine-tune a copy of ``model`` on HxWxC float ``images`` in [0,1] (C its input channels:
    3, or 1 for the grey model on greyscale photos) for up to ``steps``.

    Stops after ``max_seconds`` if given. ``correlations``: the photos' ``median_correlations``
    when the caller has measured them already. Returns the fine-tuned network when it lowered the
    self-supervised loss on the images, else ``model`` itself (untouched, without training, when
    their luma noise is correlated).
    """
    if steps < 1:
        raise ConfigError(f"--adapt needs at least 1 step, got {steps}")
    if model.in_channels not in (1, 3) or any(img.shape[2] != model.in_channels for img in images):
        raise ConfigError(f"--adapt fine-tunes sRGB and grey models on photos of their channels, not a "
                          f"{model.in_channels}-channel model on {sorted({img.shape[2] for img in images})}-channel photos")
    arrays = tuple(np.ascontiguousarray((np.clip(img[: img.shape[0] // 2 * 2, : img.shape[1] // 2 * 2], 0, 1)
                                         * 65535 + 0.5).astype(np.uint16).transpose(2, 0, 1)) for img in images)
    luma, correlation = median_correlations(images) if correlations is None else correlations
    stride = CORRELATED_STRIDE if correlation > CORRELATED else 1
    data = LoadedImages(arrays, tuple(Path(f"input-{i}") for i in range(len(arrays))), (), 65535.0)
    config = TrainConfig(steps=steps, batch_size=ADAPT_BATCH, crop=min(ADAPT_CROP, _largest_crop(arrays, stride)),
                         lr=WARM_START_LR, lr_schedule="cosine", pd=stride, seed=seed, channels=model.in_channels,
                         checkpoint_every=10**9,
                         checkpoint_seconds=float("inf"))
    if not loss_can_tell(luma):
        return Adapted(model, 0, 0.0, stride, None, luma)
    held = tuple(a.astype(np.float32) / np.float32(65535) for a in arrays)
    before = held_out_loss(model, held, config)
    with tempfile.TemporaryDirectory(prefix="n2n-adapt-") as run_dir:
        result = train(config, data, device=torch.device(device), run_dir=Path(run_dir),
                       init_state=model.state_dict(), on_progress=on_progress, max_seconds=max_seconds)
    check = SelfCheck(len(held), before, held_out_loss(result.model, held, config), "the model before --adapt")
    return Adapted(result.model if check.passed else model, result.steps, result.seconds, stride, check, luma)


def adapt_to_files(model: UNet | Callable[[bool, bool], UNet], sources: Sequence[Path], steps: int, *,
                   minutes: float = 5.0, device: torch.device | str = "cpu",
                   on_progress: Callable[[Progress], None] | None = None) -> Adapted:
    """:func:`adapt` on up to MAX_IMAGES of the image files ``sources``.

    ``model`` may be a function of whether the photos' noise is correlated and whether they are
    all greyscale (the real-photo model for camera JPEGs, the grey model for greyscale photos
    with independent noise, the blind one for the rest). Grey photos are fine-tuned on as they
    are when the model takes one channel, else as three equal channels.
    """
    from n2ncli.io.image import read_image

    if minutes <= 0:
        raise ConfigError(f"--adapt-minutes must be > 0, got {minutes}")
    if not sources:
        raise ConfigError("--adapt needs sRGB images among the inputs")
    picks = sorted({int(i) for i in np.linspace(0, len(sources) - 1, min(MAX_IMAGES, len(sources)))})
    images = []
    for i in picks:
        try:
            images.append(read_image(sources[i]).to_float())
        except ImageReadError:  # the batch reports that file and goes on; --adapt learns from the others
            continue
    if not images:
        raise ConfigError("--adapt could read none of the photos it picked")
    correlations = median_correlations(images)
    if not isinstance(model, UNet):
        model = model(correlations[1] > CORRELATED, all(im.shape[2] == 1 for im in images))
    if model.in_channels == 3:
        images = [np.repeat(im, 3, axis=2) if im.shape[2] == 1 else im for im in images]
    return adapt(model, images, steps, max_seconds=minutes * 60, device=device, correlations=correlations,
                 on_progress=on_progress)


def _largest_crop(arrays: Sequence[np.ndarray], stride: int) -> int:
    """The crop the smallest image allows, a multiple of the sub-sampler's and PD's cells."""
    side = min(min(a.shape[1:]) for a in arrays)
    multiple = 2 * stride
    crop = side // multiple * multiple
    if crop < 32 * stride:
        raise ConfigError(f"--adapt needs images of at least {32 * stride} px per side")
    return crop
