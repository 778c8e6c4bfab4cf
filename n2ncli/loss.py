"""Neighbor2Neighbor loss and the schedule of its regulariser weight gamma."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from n2ncli.errors import ConfigError
from n2ncli.pd import merge_torch, split_torch
from n2ncli.sampler import draw_pair_indices, subsample_pair


@dataclass(frozen=True)
class GammaSchedule:
    """gamma(progress): a linear ramp from ``start`` to ``end`` over training, or a constant.

    The paper ramps 0 -> 2 for sRGB (0 -> 1 for raw) as ``end * epoch / n_epochs``.
    """

    end: float = 2.0
    start: float = 0.0
    constant: bool = False

    def __post_init__(self) -> None:
        if self.end < 0 or self.start < 0:
            raise ConfigError(f"regulariser weight must be >= 0, got start={self.start}, end={self.end}")

    def __call__(self, progress: float) -> float:
        """``progress`` in [0, 1] is the fraction of training done."""
        if self.constant:
            return self.end
        p = min(max(progress, 0.0), 1.0)
        return self.start + (self.end - self.start) * p


@dataclass(frozen=True)
class LossTerms:
    total: torch.Tensor
    reconstruction: torch.Tensor
    regulariser: torch.Tensor


def n2n_loss(model: nn.Module, noisy: torch.Tensor, gamma: float, *, sampler: str = "random",
             generator: torch.Generator | Sequence[torch.Generator] | None = None,
             target: torch.Tensor | None = None, full_stride: int = 1, clip_aware: bool = False,
             weights: torch.Tensor | None = None) -> LossTerms:
    """L = |f(g1 y) - g2 y|^2 + gamma |f(g1 y) - g2 y - (g1 f(y) - g2 f(y))|^2 (means).

    ``noisy`` is NxCxHxW (H, W even). f(y) runs without gradient, as in the paper; the same
    neighbour masks serve both terms. ``target``: a second, independent noisy draw of the same
    clean images (synthetic noise only); g2 is then taken from it, so noise correlated between
    neighbours is no longer predictable from g1. ``full_stride`` computes f(y) through
    pixel-shuffle sub-images of that stride, as inference with ``--pd`` does. ``clip_aware``
    leaves out targets at the ends of the range (within half an 8-bit step of 0 or 1): a clipped
    pixel's noise is not zero-mean, and a network that predicts it learns to darken highlights.
    ``weights`` (N,) weighs each image's mean terms (a weighted mean over the batch); see
    :func:`level_weights`.
    """
    n, _, h, w = noisy.shape
    positions = draw_pair_indices(n, h, w, mode=sampler, generator=generator, device=noisy.device)
    g1, g2 = subsample_pair(noisy, positions)
    if target is not None:
        g2 = subsample_pair(target, positions)[1]
    with torch.no_grad():
        full = merge_torch(model(split_torch(noisy, full_stride)), full_stride) if full_stride > 1 else model(noisy)
        f1, f2 = subsample_pair(full, positions)
    pred = model(g1)
    diff = pred.float() - g2.float()
    keep = None
    if clip_aware:
        margin = 0.5 / 255
        keep = ((g2 > margin) & (g2 < 1 - margin)).float()
    rec = _mean(diff.square(), keep, weights)
    reg = _mean((diff - (f1.float() - f2.float())).square(), keep, weights)
    return LossTerms(rec + gamma * reg, rec.detach(), reg.detach())


def _mean(values: torch.Tensor, keep: torch.Tensor | None, weights: torch.Tensor | None) -> torch.Tensor:
    """The mean of ``values`` over the kept pixels; with ``weights``, the weighted mean of the
    images' own means."""
    if weights is None:
        if keep is None:
            return values.mean()
        return (values * keep).mean() / keep.mean().clamp(min=1e-6)
    if keep is None:
        per_image = values.flatten(1).mean(1)
    else:
        per_image = (values * keep).flatten(1).sum(1) / keep.flatten(1).sum(1).clamp(min=1.0)
    w = weights.to(per_image)
    return (per_image * w).sum() / w.sum()


#: Noise variance floor of :func:`level_weights`: a quarter of an 8-bit step squared.
LEVEL_FLOOR = (0.25 / 255) ** 2


def level_weights(first: torch.Tensor, second: torch.Tensor, exponent: float) -> torch.Tensor:
    """Per-image loss weights v^-exponent from two independent noisy draws of the same images.

    v = mean((first - second)^2) / 2 is each image's noise variance. An unweighted L2 loss is
    dominated by the noisiest images (a denoiser's error grows with the noise), so a model
    trained over a wide range of levels learns to smooth the quiet ones; the mean PSNR counts
    every image alike, which weights of about 1/MSE do: a denoiser's MSE grows roughly as
    sigma^1.3, so exponent 0.65. Weights are normalised to a mean of 1 over the batch.
    """
    v = (first.float() - second.float()).square().flatten(1).mean(1) / 2
    w = (v + LEVEL_FLOOR).pow(-exponent)
    return w / w.mean()
