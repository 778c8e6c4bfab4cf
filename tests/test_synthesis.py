"""Camera noise synthesis: the pipeline inverts itself, and the noise has real camera structure.

The structure is checked against what the 41 real pairs measure (noisy - mean shot, averaged over
the pairs): autocorrelation 0.69 at lag 1 and 0.41 at lag 2 (per pair 0.48-0.84 and 0.21-0.65),
0.63 between channels, and a noise level that peaks in the mid-tones.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from n2ncli.noise import parse_noise
from n2ncli.synthesis import CameraParams, camera_pair, demosaic, develop, sensor_noise, unprocess


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _flat(values: tuple[float, float, float], size: int = 64) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, size, size).contiguous()


def _corr(r: np.ndarray, dy: int, dx: int) -> float:
    a, b = r[: r.shape[0] - dy, : r.shape[1] - dx], r[dy:, dx:]
    return float(((a - a.mean()) * (b - b.mean())).mean() / a.var())


@pytest.mark.parametrize("method", ["bilinear", "malvar"])
@pytest.mark.parametrize("colour", [(0.2, 0.5, 0.7), (0.6, 0.3, 0.1), (0.05, 0.05, 0.05)])
def test_develop_undoes_unprocess_on_flat_colours(method: str, colour: tuple[float, float, float]) -> None:
    p = dataclasses.replace(CameraParams.draw(_gen(3)), demosaic=method)
    x = _flat(colour)
    back = develop(unprocess(x, p), p)
    assert float((back - x).abs().max()) < 2e-3


def test_demosaic_keeps_every_measured_sample() -> None:
    mosaic = torch.rand(1, 1, 16, 20, generator=_gen(0))
    rgb = demosaic(mosaic, "malvar")
    assert torch.equal(rgb[0, 0, 0::2, 0::2], mosaic[0, 0, 0::2, 0::2])  # R sites
    assert torch.equal(rgb[0, 1, 0::2, 1::2], mosaic[0, 0, 0::2, 1::2])  # G sites
    assert torch.equal(rgb[0, 2, 1::2, 1::2], mosaic[0, 0, 1::2, 1::2])  # B sites


def test_sensor_noise_variance_is_shot_times_signal_plus_read() -> None:
    p = CameraParams.draw(_gen(1), shot=4e-3)
    levels = (0.05, 0.2, 0.5, 0.8)
    var = []
    for k, level in enumerate(levels):
        mosaic = torch.full((1, 1, 256, 256), level, dtype=torch.float64)
        var.append(float((sensor_noise(mosaic, p, _gen(k)) - mosaic).var()))
    slope, intercept = np.polyfit(levels, var, 1)
    assert slope == pytest.approx(p.shot, rel=0.05)
    assert intercept == pytest.approx(p.read, abs=0.1 * p.shot)
    mosaic = torch.full((1, 1, 256, 256), 0.3)
    raw = (sensor_noise(mosaic, p, _gen(9)) - mosaic)[0, 0].numpy()
    assert abs(_corr(raw, 0, 1)) < 0.03  # independent on the sensor: the camera correlates it


def _residuals(seed: int, grey: float, **fixed) -> tuple[np.ndarray, CameraParams]:
    g = _gen(seed)
    p = dataclasses.replace(CameraParams.draw(g, shot=2e-3), **fixed)
    noisy, ref = camera_pair(_flat((grey, grey, grey), 96), p, g)
    return (noisy - ref)[0].permute(1, 2, 0).numpy().astype(np.float64), p


def test_srgb_noise_is_correlated_like_real_camera_jpegs() -> None:
    rho1, rho2, cross = [], [], []
    for seed in range(12):
        r, _ = _residuals(seed, 0.4)
        rho1.append(np.mean([_corr(r[..., c], 0, 1) for c in range(3)] + [_corr(r[..., c], 1, 0) for c in range(3)]))
        rho2.append(np.mean([_corr(r[..., c], 0, 2) for c in range(3)] + [_corr(r[..., c], 2, 0) for c in range(3)]))
        cross.append(np.corrcoef(r[..., 0].ravel(), r[..., 1].ravel())[0, 1])
    assert 0.48 <= np.mean(rho1) <= 0.84
    assert 0.21 <= np.mean(rho2) <= 0.65
    assert np.mean(rho2) < np.mean(rho1)
    assert np.mean(cross) > 0.2  # luma-dominated, as after in-camera chroma noise reduction


def test_srgb_noise_peaks_in_the_mid_tones_like_real_photos() -> None:
    # The real pairs (noise std on 0-255 by the reference's brightness): 3.1 below 0.1, 5.4 at
    # 0.45-0.6, 2.0 above 0.8. Shot noise grows with the signal; the tone curve flattens both ends.
    fixed = {"jpeg": "none", "sharpen": 0.0}
    std = [np.mean([_residuals(seed, grey, **fixed)[0].std() for seed in range(4)]) for grey in (0.05, 0.4, 0.9)]
    assert std[1] > 1.3 * std[0] and std[1] > 1.3 * std[2] and min(std) > 0


def test_draws_are_reproducible_from_the_generator() -> None:
    clean = torch.rand(1, 3, 32, 32, generator=_gen(0))
    a = camera_pair(clean, CameraParams.draw(_gen(5)), _gen(6))[0]
    b = camera_pair(clean, CameraParams.draw(_gen(5)), _gen(6))[0]
    c = camera_pair(clean, CameraParams.draw(_gen(7)), _gen(6))[0]
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_the_file_is_8_bit() -> None:
    noisy, _ = camera_pair(torch.rand(1, 3, 32, 32, generator=_gen(0)), CameraParams.draw(_gen(2)), _gen(2))
    assert torch.equal(torch.round(noisy * 255), noisy * 255)
    assert float(noisy.min()) >= 0 and float(noisy.max()) <= 1


def test_camera_is_a_noise_spec_for_training_and_evaluation() -> None:
    spec = parse_noise("camera")
    assert spec.name == "camera"
    clean = torch.rand(2, 3, 32, 48, generator=_gen(0))
    noisy = spec.apply(clean, [_gen(1), _gen(2)])
    assert noisy.shape == clean.shape and not torch.equal(noisy, clean)
    odd = np.random.default_rng(0).random((31, 45, 3), dtype=np.float32)  # odd sizes: padded, cropped back
    out = spec.apply_numpy(odd, np.random.default_rng(1))
    assert out.shape == odd.shape and out.dtype == np.float32


def test_packed_mosaic_is_the_unprocessed_mosaic_in_canonical_order(kodak_crop) -> None:  # noqa: ANN001
    """R, G1, G2, B planes of the RGGB mosaic: what the raw model sees from a real camera's pack()."""
    from n2ncli.bayer import pack
    from n2ncli.synthesis import packed_mosaic

    srgb = torch.from_numpy(kodak_crop(0, 0, 64, 96).astype(np.float32) / 255).permute(2, 0, 1)[None]
    p = CameraParams.draw(torch.Generator().manual_seed(5))
    mosaic = unprocess(srgb, p)[0, 0].numpy()
    packed = packed_mosaic(srgb, p)[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(packed, pack(mosaic, "RGGB")[0])
    # camera-linear, white balance undone: green is the strongest channel, as in real raws
    means = packed.reshape(-1, 4).mean(axis=0)
    assert means[1] > means[0] and means[2] > means[3] and abs(means[1] - means[2]) < 0.01


def test_sensor_noise_spec_draws_one_exposure_per_image_and_two_independent_draws() -> None:
    spec = parse_noise("sensor")
    clean = torch.full((2, 4, 64, 64), 0.25)
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    a, b = spec.apply_twice(clean, gens)
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    again = spec.apply(clean, gens)
    np.testing.assert_array_equal(a.numpy(), again.numpy())  # the first draw is the plain draw
    var_a, var_b = (a - clean).var(dim=(1, 2, 3)), (b - clean).var(dim=(1, 2, 3))
    assert torch.allclose(var_a, var_b, rtol=0.1)  # the same exposure for both draws of an image
    assert not torch.allclose(var_a[0], var_a[1], rtol=0.1)  # each image its own
    corr = np.corrcoef((a - clean).flatten(), (b - clean).flatten())[0, 1]
    assert abs(corr) < 0.02  # independent noise
    assert spec.name == "sensor" and (a < 0.25 - 1e-3).any()  # not clipped: raw keeps values below black


def test_jpeg_noise_is_two_independent_draws_with_one_sigma_and_one_encoding(kodak_crop) -> None:  # noqa: ANN001
    # --noise jpeg: Gaussian noise in sRGB saved as a file. Both draws of an image share sigma
    # and encoding (the second is the first's independent target), are 8-bit, and with 4:2:0
    # chroma only the colour noise is correlated between pixels, as --pd auto measures it.
    from n2ncli.pd import CORRELATED, noise_correlations
    from n2ncli.synthesis import jpeg_files

    clean = torch.from_numpy(kodak_crop(100, 100, 256, 256).astype(np.float32) / 255).permute(2, 0, 1)[None]
    a, b = jpeg_files(clean, 15.0, _gen(3), 2, ("420", 92))
    assert torch.equal(torch.round(a * 255), a * 255)
    na, nb = (a - clean).double(), (b - clean).double()
    assert 11 < float(na.std()) * 255 < 16 and abs(float(na.std() / nb.std()) - 1) < 0.03
    assert abs(float(torch.corrcoef(torch.stack([na.ravel(), nb.ravel()]))[0, 1])) < 0.05
    luma, chroma = noise_correlations(a[0].permute(1, 2, 0).numpy())
    assert luma <= CORRELATED < chroma
    luma444, chroma444 = noise_correlations(jpeg_files(clean, 15.0, _gen(3), 1, ("444", 92))[0][0].permute(1, 2, 0).numpy())
    assert max(luma444, chroma444) <= CORRELATED


def test_jpeg_is_a_noise_spec_with_per_image_sigma_and_encoding() -> None:
    spec = parse_noise("jpeg:10-40")
    clean = torch.full((1, 3, 64, 64), 0.5)
    pairs = [spec.apply_twice(clean, [_gen(seed)]) for seed in range(6)]
    sigmas = [float((a - clean).std()) * 255 for a, _ in pairs]
    assert all(8 < s < 45 for s in sigmas) and max(sigmas) - min(sigmas) > 5
    for a, b in pairs:  # the target's sigma is the input's
        assert abs(float((a - clean).std() / (b - clean).std()) - 1) < 0.1
    assert torch.equal(spec.apply(clean, _gen(1)), spec.apply(clean, _gen(1)))
    out = spec.apply_numpy(np.full((31, 45, 3), 0.5, np.float32), np.random.default_rng(1))
    assert out.shape == (31, 45, 3) and out.dtype == np.float32
