"""Pixel-shuffle downsampling (PD): correlated noise made nearly independent for Neighbor2Neighbor.

Real sRGB noise is correlated over 2-3 pixels (demosaicing, in-camera denoising, sharpening,
4:2:0 chroma). Splitting an image into its ``s x s`` stride-``s`` sub-images puts pixels that
were ``s`` apart side by side, where the correlation is far weaker; the sub-sampler's neighbours
are then ``>= s`` pixels apart in the original. Training splits each crop into its ``s**2``
sub-images; inference denoises them and puts the pixels back (``PixelShufflePredictor``).
Every function here is pure; arrays are NxHxWxC (numpy) or NxCxHxW (torch).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from n2ncli.backends import Predictor
from n2ncli.errors import ConfigError
from n2ncli.local_mean import SIGMA as MEAN_SIGMA
from n2ncli.local_mean import SIGMA_CHROMA as MEAN_SIGMA_CHROMA
from n2ncli.local_mean import SIGMA_FINE as MEAN_SIGMA_FINE
from n2ncli.local_mean import keep_local_mean

#: Strides ``--pd`` accepts (1 = no PD).
STRIDES = (1, 2, 3)


def check_stride(stride: int) -> int:
    if stride not in STRIDES:
        raise ConfigError(f"--pd must be auto or one of {', '.join(map(str, STRIDES))}, got {stride!r}")
    return stride


def split(batch: np.ndarray, stride: int) -> np.ndarray:
    """NxHxWxC -> (N*s*s)x(H/s)x(W/s)xC, sub-image (i, j) holding pixels (i::s, j::s).

    H and W are edge-padded (replicated) up to multiples of ``s``; :func:`merge` crops back.
    """
    if stride == 1:
        return batch
    n, h, w, c = batch.shape
    ph, pw = (-h) % stride, (-w) % stride
    if ph or pw:
        batch = np.pad(batch, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    hs, ws = batch.shape[1] // stride, batch.shape[2] // stride
    sub = batch.reshape(n, hs, stride, ws, stride, c).transpose(0, 2, 4, 1, 3, 5)
    return np.ascontiguousarray(sub.reshape(n * stride * stride, hs, ws, c))


def merge(sub: np.ndarray, stride: int, height: int, width: int) -> np.ndarray:
    """Inverse of :func:`split`: (N*s*s)x(H'/s)x(W'/s)xC -> NxHxWxC, cropped to ``height`` x ``width``."""
    if stride == 1:
        return sub
    ns, hs, ws, c = sub.shape
    n = ns // (stride * stride)
    full = sub.reshape(n, stride, stride, hs, ws, c).transpose(0, 3, 1, 4, 2, 5).reshape(n, hs * stride, ws * stride, c)
    return np.ascontiguousarray(full[:, :height, :width])


def split_torch(x, stride: int):  # noqa: ANN001, ANN201 - torch tensors; torch is imported lazily
    """NxCxHxW (H, W multiples of ``s``) -> (N*s*s)xCx(H/s)x(W/s): training crops to PD sub-images."""
    if stride == 1:
        return x
    n, c, h, w = x.shape
    sub = x.reshape(n, c, h // stride, stride, w // stride, stride).permute(0, 3, 5, 1, 2, 4)
    return sub.reshape(n * stride * stride, c, h // stride, w // stride)


def merge_torch(sub, stride: int):  # noqa: ANN001, ANN201
    """Inverse of :func:`split_torch`: (N*s*s)xCxhxw -> NxCx(h*s)x(w*s)."""
    if stride == 1:
        return sub
    ns, c, h, w = sub.shape
    n = ns // (stride * stride)
    full = sub.reshape(n, stride, stride, c, h, w).permute(0, 3, 4, 1, 5, 2)
    return full.reshape(n, c, h * stride, w * stride)


class _Forwarding:
    """A predictor wrapper that answers for its backend (provider, bytes_per_pixel...)."""

    inner: Predictor

    def __getattr__(self, name: str):  # noqa: ANN204
        if name == "inner":  # not set yet (copying): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)


class PixelShufflePredictor(_Forwarding):
    """Wraps any predictor: denoise the ``s**2`` stride-``s`` sub-images, then interleave them back.

    ``blend`` in [0, 1] mixes in the plain (stride 1) output of the same predictor: the PD output
    is free of the correlated noise but loses some of the finest detail, the plain one keeps it.
    """

    def __init__(self, inner: Predictor, stride: int, blend: float = 0.0) -> None:
        self.inner = inner
        self.stride = check_stride(stride)
        if not 0.0 <= blend <= 1.0:
            raise ConfigError(f"PD blend must be in [0, 1], got {blend}")
        self.blend = blend
        self.channels = inner.channels


    def predict(self, batch: np.ndarray) -> np.ndarray:
        n, h, w, _ = batch.shape
        out = merge(self.inner.predict(split(batch, self.stride)), self.stride, h, w)
        if self.blend > 0 and self.stride > 1:
            out = (1.0 - self.blend) * out + self.blend * self.inner.predict(batch)
        return out


#: SecondPass's gate, on the standard deviation (0-255) of what the first pass removed: no second
#: pass below SECOND_PASS_FROM, its full weight from SECOND_PASS_FROM + SECOND_PASS_SPAN on.
SECOND_PASS_FROM = 5.5
SECOND_PASS_SPAN = 2.0


class SecondPass(_Forwarding):
    """Wraps any predictor: denoise, denoise the (clipped) result again, and mix in up to
    ``weight`` of the second output, the more the stronger the noise the first pass removed.

    For noise correlated in chroma only (a JPEG's 4:2:0 chroma over independent luma), where
    ``--pd auto`` runs the real-photo model at stride 1. srgb-camera, trained on camera noise,
    leaves part of strong noise behind: a second pass helps where the first removed much (its
    removed part's std 10-12 at sigma 25, JPEG q92 4:2:0: +1.5 dB with the second output alone)
    and costs detail where it removed little (3.4-4.2 at sigma 5: -2 dB). Hence the gate,
    measured on Kodak images (docs/real-noise.md). ``denoise_array`` runs it over a whole image,
    so every tile of a photo takes one share; ``predict`` decides per batch.
    """

    def __init__(self, inner: Predictor, weight: float) -> None:
        if not 0.0 <= weight <= 1.0:
            raise ConfigError(f"second-pass weight must be in [0, 1], got {weight}")
        self.inner, self.weight, self.channels = inner, weight, inner.channels

    def share(self, noisy: np.ndarray, once: np.ndarray) -> float:
        """The second output's share for one batch: the gate on the removed part's std."""
        removed = float(np.std(noisy.astype(np.float64) - once)) * 255.0
        return self.weight * min(max((removed - SECOND_PASS_FROM) / SECOND_PASS_SPAN, 0.0), 1.0)

    def after(self, noisy: np.ndarray, once: np.ndarray, again: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """The output from the first pass ``once`` over ``noisy``: ``again`` (the same denoiser)
        runs over the clipped ``once`` only when the gate gives the second output a share."""
        share = self.share(noisy, once)
        if share == 0.0:
            return once
        twice = again(np.ascontiguousarray(np.clip(once, 0.0, 1.0), dtype=np.float32))
        return (1.0 - share) * once + share * twice

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.after(batch, self.inner.predict(batch), self.inner.predict)


class MeanKept(_Forwarding):
    """Wraps any predictor: its output given back the input's local mean (``n2ncli.local_mean``).

    ``denoise_array`` applies it once to a whole image, after every tile (and any second pass);
    ``predict`` keeps each image's (or tile's) own, for callers without the whole image.
    """

    def __init__(self, inner: Predictor, sigma: float = MEAN_SIGMA) -> None:
        if sigma <= 0:
            raise ConfigError(f"the local mean's sigma must be positive, got {sigma}")
        self.inner, self.sigma, self.channels = inner, sigma, inner.channels

    def after(self, noisy: np.ndarray, out: np.ndarray) -> np.ndarray:
        return keep_local_mean(noisy, out, self.sigma)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return np.stack([self.after(b, o) for b, o in zip(batch, self.inner.predict(batch))])


# ----------------------------------------------------------------------------- choosing the stride

#: Side of the square blocks the correlation statistic compares, and the share of the flattest
#: blocks it keeps (texture adds to differences at every lag; flat blocks hold mostly noise).
BLOCK = 16
FLAT_SHARE = 0.2
#: Largest area analysed (pixels); bigger images are measured on an evenly spread subset of blocks.
MAX_BLOCKS = 4096


#: RGB -> (Y, Cb, Cr) without offsets (BT.601, as JPEG).
_YCC = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], np.float32)


def noise_correlation(image: np.ndarray) -> float:
    """How correlated the noise of HxWxC float ``image`` is between neighbouring pixels, about 0..1.

    The larger of the luma and the chroma statistic (4:2:0 JPEG correlates chroma only, camera
    noise reduction mostly luma), each ``1 - D1 / D3``: ``Dk`` is the median, over the flattest
    blocks, of the mean squared difference between pixels ``k`` apart (rows and columns). For
    noise with autocorrelation ``rho(k)`` in a flat block ``Dk = 2 var (1 - rho(k))``, so the
    statistic is ``(rho1 - rho3) / (1 - rho3)``: about 0 for independent noise.
    """
    return max(noise_correlations(image))


def noise_correlations(image: np.ndarray) -> tuple[float, float]:
    """(luma, chroma) statistics of :func:`noise_correlation`; a grey image gives its one statistic twice."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[2] == 3:
        ycc = img @ _YCC.T
        return _correlation(ycc[..., :1]), _correlation(ycc[..., 1:])
    one = _correlation(img)
    return one, one


def _correlation(img: np.ndarray) -> float:
    h, w = (img.shape[0] // BLOCK) * BLOCK, (img.shape[1] // BLOCK) * BLOCK
    if h < BLOCK or w < BLOCK:
        return 0.0
    by, bx = h // BLOCK, w // BLOCK
    ys = np.linspace(0, by - 1, min(by, int(np.sqrt(MAX_BLOCKS)))).astype(int)
    xs = np.linspace(0, bx - 1, min(bx, int(np.sqrt(MAX_BLOCKS)))).astype(int)
    d1, d3 = [], []
    for y in ys:
        for x in xs:
            b = img[y * BLOCK:(y + 1) * BLOCK, x * BLOCK:(x + 1) * BLOCK].astype(np.float64)
            d1.append(_diff_energy(b, 1))
            d3.append(_diff_energy(b, 3))
    d1a, d3a = np.array(d1), np.array(d3)
    keep = d3a <= np.quantile(d3a, FLAT_SHARE)
    keep &= d3a > 0
    if not keep.any():
        return 0.0
    return float(1.0 - np.median(d1a[keep]) / np.median(d3a[keep]))


def _diff_energy(block: np.ndarray, lag: int) -> float:
    dy = block[lag:] - block[:-lag]
    dx = block[:, lag:] - block[:, :-lag]
    return float((np.mean(dy**2) + np.mean(dx**2)) / 2)


#: Above this statistic the noise counts as correlated and ``--pd auto`` takes stride 2.
#: Measured (runs of ``noise_correlation`` on Kodak24 and the 41 real pairs, docs/real-noise.md):
#: independent Gaussian noise saved as PNG gives medians 0.02-0.10 at sigma 5-50 (at most 0.43
#: from sigma 10 up); JPEG q92 4:2:0 0.66-0.74; real camera JPEGs 0.59-0.76 (min 0.589).
#: Per component: sigma-15 JPEG q92 4:2:0 has chroma 0.66-0.75 but luma -0.05-0.26 (Kodak24);
#: the real pairs' luma 0.58-0.76.
CORRELATED = 0.45
#: Stride taken for correlated noise: on the real pairs PD2 beat PD3 (docs/real-noise.md).
CORRELATED_STRIDE = 2


def median_correlation(images) -> float:  # noqa: ANN001 - a sequence of HxWxC arrays
    """The median :func:`noise_correlation` of several photos: one decision for a folder."""
    return float(np.median([noise_correlation(img) for img in images]))


def median_correlations(images) -> tuple[float, float]:  # noqa: ANN001 - a sequence of HxWxC arrays
    """(median luma statistic, median :func:`noise_correlation`) of several photos, one pass."""
    both = [noise_correlations(img) for img in images]
    return float(np.median([luma for luma, _ in both])), float(np.median([max(b) for b in both]))


def choose_stride(image: np.ndarray, correlated_stride: int = CORRELATED_STRIDE) -> int:
    """``--pd auto``'s stride: ``correlated_stride`` when the image's luma noise is correlated
    (its statistic > CORRELATED), else 1 (see :meth:`PdSelector.choice`)."""
    return _auto_stride(noise_correlations(image)[0], correlated_stride)


def _auto_stride(luma: float, correlated_stride: int) -> int:
    return correlated_stride if luma > CORRELATED else 1


def parse_pd(text: str | int) -> int | None:
    """``--pd`` value: None for auto, else a checked stride."""
    if isinstance(text, str) and text.strip().lower() == "auto":
        return None
    try:
        return check_stride(int(text))
    except (TypeError, ValueError):
        raise ConfigError(f"--pd must be auto or one of {', '.join(map(str, STRIDES))}, got {text!r}") from None


class PdSelector(_Forwarding):
    """``--pd`` (and the model) for a whole run, decided per image from its noise.

    ``stride`` None is auto: images whose noise is correlated (:func:`noise_correlation` >
    CORRELATED) run at ``correlated_stride`` (the stride the model's training inputs had), the
    others at 1. ``correlated`` is the predictor for correlated noise when it differs from
    ``inner`` (the real-photo model beside the blind one). Tiles call ``predict`` of the
    predictor :meth:`for_image` returns for their image, so one image never mixes settings.
    ``grey`` is the 1-channel model for grey images whose noise is independent between pixels;
    the others, and all grey images without it, run through the RGB models as three equal
    channels (``denoise_image_data``): on the real pairs' luma, correlated, the real-photo model
    that way beat the grey one through PD2 (docs/models.md). ``second_pass`` and
    ``correlated_second_pass`` are auto's :class:`SecondPass` weights for each model on images
    whose chroma noise alone is correlated. With ``keep_mean`` every route :meth:`for_image`
    returns keeps the input's local mean (:class:`MeanKept`), over ``MEAN_SIGMA`` px through
    pixel-shuffle, ``MEAN_SIGMA_CHROMA`` at stride 1 when only the chroma noise is correlated and
    ``MEAN_SIGMA_FINE`` for the other stride-1 images; without, the network alone, as the paper
    protocol scores it.
    """

    def __init__(self, inner: Predictor, stride: int | None, correlated_stride: int = CORRELATED_STRIDE,
                 correlated: Predictor | None = None, correlated_with: int | None = None,
                 blend: float = 0.0, correlated_blend: float = 0.0, grey: Predictor | None = None,
                 second_pass: float = 0.0, correlated_second_pass: float = 0.0,
                 keep_mean: bool = True) -> None:
        self.inner, self.stride = inner, stride
        self.correlated_stride = check_stride(correlated_stride)
        self.correlated = correlated
        self.correlated_with = correlated_with or self.correlated_stride  # the stride of ``correlated``
        # auto's PD output mixed with this share of the plain one (each model's ``pd_blend``);
        # an explicit --pd N is pixel-shuffle alone
        self.blend, self.correlated_blend = blend, correlated_blend
        # auto's share of a second pass where only the chroma noise is correlated (``SecondPass``;
        # each model's ``chroma_second_pass``)
        self.second_pass, self.correlated_second_pass = second_pass, correlated_second_pass
        if grey is not None and grey.channels != 1:
            raise ConfigError(f"the grey model takes {grey.channels}-channel input, not 1")
        self.grey = grey
        # each image's output given back its input's local mean (n2ncli.local_mean)
        self.keep_mean = keep_mean
        self.channels = inner.channels


    def choice(self, image: np.ndarray) -> tuple[Predictor, int]:
        """The predictor and stride for ``image``.

        Auto takes stride 1 when only the chroma noise is correlated (a JPEG's 4:2:0 chroma over
        independent luma noise): pixel-shuffle then costs luma detail and gains little, and a
        model trained on correlated noise handles the chroma at full resolution (Kodak24,
        Gaussian sigma 15 as JPEG q92 4:2:0: srgb-camera plain 31.74 dB, through PD2 with its
        blend 31.21; the blind model 29.42 / 29.30; docs/real-noise.md).
        """
        predictor, stride, _ = self._decide(image)
        return predictor, stride

    def _decide(self, image: np.ndarray) -> tuple[Predictor, int, bool]:
        """:meth:`choice`, and whether only the chroma noise is correlated (one measurement)."""
        grey = self.grey is not None and image.shape[-1] == 1
        if self.stride is not None and self.correlated is None and not grey:
            return self.inner, self.stride, False
        luma, chroma = noise_correlations(image)
        chroma_only = luma <= CORRELATED < chroma
        if grey and luma <= CORRELATED:
            return self.grey, self.stride or 1, False
        if max(luma, chroma) <= CORRELATED:
            return self.inner, self.stride or 1, False
        if self.correlated is None:
            return self.inner, self.stride or _auto_stride(luma, self.correlated_stride), chroma_only
        return self.correlated, self.stride or _auto_stride(luma, self.correlated_with), chroma_only

    def for_image(self, image: np.ndarray) -> Predictor:
        route, chroma_only = self._route(image)
        if not self.keep_mean:
            return route
        if isinstance(route, PixelShufflePredictor):
            return MeanKept(route, MEAN_SIGMA)
        return MeanKept(route, MEAN_SIGMA_CHROMA if chroma_only else MEAN_SIGMA_FINE)

    def route(self, image: np.ndarray) -> Predictor:
        """The predictor for ``image`` before its local mean is kept: stride, blend, second pass."""
        return self._route(image)[0]

    def _route(self, image: np.ndarray) -> tuple[Predictor, bool]:
        """:meth:`route`, and whether it runs at stride 1 because only the chroma noise is correlated."""
        predictor, stride, chroma_only = self._decide(image)
        if stride == 1:
            weight = self.correlated_second_pass if predictor is self.correlated else self.second_pass
            if self.stride is None and weight > 0 and chroma_only:
                return SecondPass(predictor, weight), True
            return predictor, chroma_only
        blend = 0.0 if self.stride is not None else (
            self.correlated_blend if predictor is self.correlated else self.blend)
        return PixelShufflePredictor(predictor, stride, blend), False

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Batches without their image (evaluation): each image of the batch decides for itself."""
        return np.concatenate([self.for_image(b).predict(b[None]) for b in batch])
