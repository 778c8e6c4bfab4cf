"""Luma through the grey model: the luma replaced, the chroma kept."""

from __future__ import annotations

import numpy as np
import pytest
from identity import Identity

from n2ncli.luma import LUMA, LumaFromGrey, luma
from n2ncli.pd import _YCC


class Halving:
    """A grey 'denoiser' that halves its input: easy to check against."""

    channels = 1

    def predict(self, batch: np.ndarray) -> np.ndarray:
        assert batch.shape[-1] == 1
        return batch * 0.5


def test_luma_weights_are_jpegs_and_sum_to_one() -> None:
    np.testing.assert_allclose(LUMA, _YCC[0])
    assert LUMA.sum() == pytest.approx(1.0)


def test_luma_from_grey_takes_luma_from_the_grey_model_and_chroma_from_the_colour_one(kodak_crop) -> None:
    x = kodak_crop(0, 0, 64, 96, image="kodim23.png").astype(np.float32)[None] / 255
    out = LumaFromGrey(Identity(3), Halving()).predict(x)
    np.testing.assert_allclose(luma(out), 0.5 * luma(x), atol=1e-6)
    ycc_in, ycc_out = x @ _YCC.T, out @ _YCC.T
    np.testing.assert_allclose(ycc_out[..., 1:], ycc_in[..., 1:], atol=1e-6)  # chroma untouched
    assert not np.allclose(out, x, atol=1e-2)


def test_luma_from_grey_refuses_models_of_the_wrong_channels() -> None:
    with pytest.raises(ValueError, match="1-channel"):
        LumaFromGrey(Identity(3), Identity(3))
