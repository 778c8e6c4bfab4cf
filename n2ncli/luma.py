"""Luma through the grey model: for noise that is equal in every channel, or only in luma.

Not in ``denoise``'s choice: ``bench/grey.py`` measures ``LumaFromGrey`` on 4:2:0 JPEGs, and with
the shipped grey weights it scored below the real-photo model alone (31.47 against 31.76 dB,
docs/models.md).

An RGB model trained on noise independent per channel reads noise that is the same in R, G
and B as signal (real detail is strongly correlated across channels), so it leaves most of it:
a grey photo repeated to three channels, and the luma of a JPEG whose 4:2:0 chroma is
correlated but whose luma noise is independent from pixel to pixel. The grey model
(``grey-gaussian5-50``) was trained on exactly that noise in one channel. Arrays are NxHxWxC.
"""

from __future__ import annotations

import numpy as np

from n2ncli.backends import Predictor
from n2ncli.pd import _YCC

#: BT.601 luma weights, as JPEG's Y (the first row of ``pd._YCC``). They sum to 1: adding ``d``
#: to R, G and B moves Y by ``d`` and leaves Cb and Cr as they were.
LUMA = _YCC[0]


def luma(batch: np.ndarray) -> np.ndarray:
    """NxHxWx3 -> NxHxWx1 BT.601 luma."""
    return (batch @ LUMA)[..., None].astype(batch.dtype, copy=False)


class LumaFromGrey:
    """The colour predictor's output with its luma replaced by the grey predictor's on the input's luma.

    Chroma stays the colour model's (for a 4:2:0 JPEG, the real-photo model handles its
    correlated chroma); luma comes from the grey model, which removes independent luma noise that
    the colour model keeps. Costs one grey pass on top of the colour one.
    """

    def __init__(self, colour: Predictor, grey: Predictor) -> None:
        if grey.channels != 1 or colour.channels != 3:
            raise ValueError(f"LumaFromGrey needs a 3-channel and a 1-channel predictor, got "
                             f"{colour.channels} and {grey.channels}")
        self.colour, self.grey = colour, grey
        self.channels = 3

    def __getattr__(self, name: str):  # noqa: ANN204 - provider, bytes_per_pixel... of the colour backend
        if name in ("colour", "grey"):
            raise AttributeError(name)
        return getattr(self.colour, name)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        out = self.colour.predict(batch)
        return out + (self.grey.predict(luma(batch)) - luma(out))
