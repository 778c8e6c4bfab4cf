"""A fit measures itself: the self-supervised loss on a few of the user's images it never trained on.

Users have no clean images, so the check is the reconstruction term of the Neighbor2Neighbor
loss, ``|f(g1 y) - g2 y|^2``, on held-out images with fixed crops, masks and (for synthetic
noise) fixed draws: the same numbers for the model before and after the fit, so the two compare
pair for pair. For independent noise it is the true error of predicting the neighbour plus a
constant (the noise variance), so lower means a better denoiser; with ``pd`` matching the noise's
correlation that stays nearly true. (The regulariser is no measure: the identity zeroes it.)
A fit whose held-out loss rose made things worse, and is reported as such.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from n2ncli.data import LoadedImages
from n2ncli.loss import n2n_loss
from n2ncli.noise import parse_noise
from n2ncli.train import TrainConfig, pd_subimages

#: Images held back: one in eight, at least 1 and at most 4, from folders of 5 images or more.
MIN_IMAGES, SHARE, MAX_HELD = 5, 8, 4
CHECK_CROP = 256
CHECK_SEED = 7919


@dataclass(frozen=True)
class SelfCheck:
    """Held-out loss of the model a fit started from (``before``) and of the fitted one (``after``)."""

    images: int
    before: float
    after: float
    baseline: str  # what ``before`` scored: the warm-start model, or the noisy input itself

    @property
    def passed(self) -> bool:
        return self.after <= self.before

    @property
    def change(self) -> float:
        """Relative change of the held-out loss (negative: better)."""
        return (self.after - self.before) / self.before if self.before > 0 else 0.0

    def to_json(self) -> dict[str, object]:
        return {"images": self.images, "before": self.before, "after": self.after, "baseline": self.baseline,
                "passed": self.passed}


def held_out_count(images: int) -> int:
    return 0 if images < MIN_IMAGES else max(1, min(MAX_HELD, images // SHARE))


def split_held_out(images: LoadedImages) -> tuple[LoadedImages, tuple[np.ndarray, ...]]:
    """(training images, held-out CxHxW float32 arrays): every SHARE-th image is held back."""
    n = held_out_count(len(images.arrays))
    if n == 0:
        return images, ()
    step = len(images.arrays) // n
    held = set(range(step - 1, len(images.arrays), step)[:n])
    keep = [i for i in range(len(images.arrays)) if i not in held]
    train = LoadedImages(tuple(images.arrays[i] for i in keep), tuple(images.paths[i] for i in keep),
                         images.skipped, images.max_value, images.floor)
    scale, floor = np.float32(images.scale), np.float32(images.floor)
    return train, tuple(images.arrays[i].astype(np.float32) * scale - floor for i in sorted(held))


@torch.no_grad()
def held_out_loss(model: torch.nn.Module | None, held: Sequence[np.ndarray], config: TrainConfig) -> float:
    """Mean reconstruction loss ``|f(g1 y) - g2 y|^2`` on the centre crop of each held-out image.

    ``model=None`` scores the identity (the noisy input as its own estimate): the bar for a fit
    from scratch. Crops, masks and synthetic noise come from fixed seeds.
    """
    noise = parse_noise(config.noise) if config.noise else None
    net = model if model is not None else (lambda x: x)
    if model is not None:
        was = model.training
        model.eval()
    total = []
    multiple = 2 * config.pd * 32
    for k, img in enumerate(held):
        c, h, w = img.shape
        ch, cw = min(h, CHECK_CROP) // multiple * multiple, min(w, CHECK_CROP) // multiple * multiple
        if ch == 0 or cw == 0:
            continue
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        x = torch.from_numpy(np.ascontiguousarray(img[:, y0:y0 + ch, x0:x0 + cw]))[None]
        gens = [torch.Generator().manual_seed(CHECK_SEED + k)]
        noisy = noise.apply(x, generator=gens) if noise else x
        if config.pd > 1:
            noisy, gens = pd_subimages(noisy, gens, config.pd)
        terms = n2n_loss(net, noisy, 0.0, sampler=config.sampler, generator=gens)
        total.append(float(terms.reconstruction))
    if model is not None:
        model.train(was)
    return float(np.mean(total)) if total else math.nan
