"""The official U-Net: parameter counts by formula, any input size, reflect padding, init."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from n2ncli.nets.unet import DEPTH_MULTIPLE, UNet, count_parameters, pad_to_multiple

pytestmark = pytest.mark.usefixtures("one_thread")


def _conv(cin: int, cout: int, k: int = 3) -> int:
    return cin * cout * k * k + cout


def _expected_parameters(cin: int, cout: int, f: int = 48) -> int:
    """The architecture of the reference protocol, layer by layer."""
    f2 = 2 * f
    encoder = _conv(cin, f) + 6 * _conv(f, f)
    ups = _conv(f, f, 2) + 4 * _conv(f2, f2, 2)  # transposed 2x2 convs have the same count
    decoder = (2 * _conv(f2, f2)                      # dec_conv5a/b
               + 3 * (_conv(f2 + f, f2) + _conv(f2, f2))  # dec_conv4..2 a/b
               + _conv(f2 + cin, f2) + _conv(f2, f2))     # dec_conv1a/b
    nin = 2 * _conv(f2, f2, 1) + _conv(f2, cout, 1)
    return encoder + ups + decoder + nin


def test_parameter_count_of_the_paper_network() -> None:
    assert _expected_parameters(3, 3) == 1_259_475
    assert count_parameters(UNet(3)) == 1_259_475


@pytest.mark.parametrize(("cin", "cout"), [(1, 1), (4, 4), (4, 3)])
def test_parameter_count_for_other_channels(cin: int, cout: int) -> None:
    assert count_parameters(UNet(cin, cout)) == _expected_parameters(cin, cout)


def test_out_channels_default_to_in_channels() -> None:
    net = UNet(4)
    assert (net.in_channels, net.out_channels) == (4, 4)
    assert net.nin_c.out_channels == 4


@pytest.mark.parametrize("shape", [(1, 3, 37, 51), (1, 3, 5, 3), (2, 4, 64, 64), (1, 1, 33, 32)])
def test_output_shape_equals_input_shape(shape: tuple[int, ...]) -> None:
    net = UNet(shape[1]).eval()
    with torch.no_grad():
        out = net(torch.rand(shape))
    assert out.shape == shape
    assert torch.isfinite(out).all()


def test_output_does_not_depend_on_the_padding_region_outside_the_crop() -> None:
    """Each output pixel of a padded run equals the same pixel of a run on the padded input."""
    torch.manual_seed(0)
    net = UNet(3).eval()
    x = torch.rand(1, 3, 37, 51)
    padded, _, _ = pad_to_multiple(x)
    with torch.no_grad():
        assert torch.allclose(net(x), net(padded)[..., :37, :51], atol=1e-6)


def test_pad_to_multiple_reflects_on_bottom_and_right() -> None:
    x = torch.arange(37 * 51, dtype=torch.float32).view(1, 1, 37, 51)
    padded, h, w = pad_to_multiple(x, 32)
    assert (h, w) == (37, 51)
    assert padded.shape == (1, 1, 64, 64)
    assert torch.equal(padded[..., :37, :51], x)
    # reflection excludes the edge pixel: row 37 mirrors row 35, column 51 mirrors column 49
    assert torch.equal(padded[..., 37, :51], x[..., 35, :])
    assert torch.equal(padded[..., 38, :51], x[..., 34, :])
    assert torch.equal(padded[..., :37, 51], x[..., :, 49])


def test_pad_to_multiple_leaves_multiples_alone() -> None:
    x = torch.rand(2, 3, 64, 32)
    padded, h, w = pad_to_multiple(x)
    assert (h, w) == (64, 32)
    assert torch.equal(padded, x)
    assert DEPTH_MULTIPLE == 32


def test_pad_to_multiple_replicates_when_the_image_is_too_small_to_reflect() -> None:
    x = torch.arange(15, dtype=torch.float32).view(1, 1, 5, 3)
    padded, _, _ = pad_to_multiple(x, 32)
    assert padded.shape == (1, 1, 32, 32)
    assert torch.equal(padded[..., :5, :3], x)
    assert torch.equal(padded[..., 31, :3], x[..., 4, :])
    assert torch.equal(padded[..., 2, 31], x[..., 2, 2])


def _init_layers(net: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


def test_official_init_zero_biases_and_scaled_kaiming_std() -> None:
    torch.manual_seed(0)
    net = UNet(3, init="official")
    gain = math.sqrt(2.0 / (1 + 0.2**2))
    layers = _init_layers(net)
    assert len(layers) == 7 + 5 + 10 + 3
    for name, m in layers:
        assert torch.count_nonzero(m.bias) == 0, name
        fan_in = nn.init._calculate_correct_fan(m.weight, "fan_in")
        expected = 0.1 * gain / math.sqrt(fan_in)
        if m.weight.numel() >= 20_000:  # enough samples for a 5% estimate of the std
            assert float(m.weight.detach().std()) == pytest.approx(expected, rel=0.05), name
            assert abs(float(m.weight.detach().mean())) < 0.1 * expected, name


def test_default_init_is_torch_default_not_the_scaled_one() -> None:
    torch.manual_seed(0)
    net = UNet(3)
    m = net.dec_conv4a
    fan_in = nn.init._calculate_correct_fan(m.weight, "fan_in")
    assert torch.count_nonzero(m.bias) > 0
    assert float(m.weight.detach().std()) > 3 * 0.1 * math.sqrt(2.0) / math.sqrt(fan_in)


def test_unknown_init_is_refused() -> None:
    with pytest.raises(ValueError, match="xavier"):
        UNet(3, init="xavier")


def test_inference_without_grad_equals_the_graded_forward_and_keeps_the_input() -> None:
    """Activations run in place when no gradient is recorded; results and the input are untouched."""
    torch.manual_seed(0)
    net = UNet().eval()
    x = torch.rand(1, 3, 70, 90)
    kept = x.clone()
    graded = net(x)
    with torch.inference_mode():
        fast = net(x)
    assert torch.equal(fast, graded.detach())
    assert torch.equal(x, kept)


def test_bayer_from_rgb_keeps_what_the_rgb_network_computes() -> None:
    """The 4-channel warm start: R, G, G, B in gives the RGB network's R, G, B out (twice G)."""
    from n2ncli.nets.unet import bayer_from_rgb

    torch.manual_seed(0)
    rgb = UNet(3).eval()
    bayer = UNet(4).eval()
    bayer.load_state_dict(bayer_from_rgb(rgb.state_dict()))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        y = rgb(x)
        y4 = bayer(torch.cat([x[:, :1], x[:, 1:2], x[:, 1:2], x[:, 2:]], dim=1))
    torch.testing.assert_close(y4[:, [0, 1, 3]], y, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(y4[:, 2], y4[:, 1])


def test_grey_from_rgb_is_the_rgb_network_on_three_equal_channels() -> None:
    """The grey warm start: one channel in gives the mean of what the RGB network gives it repeated."""
    from n2ncli.nets.unet import grey_from_rgb

    torch.manual_seed(0)
    rgb = UNet(3).eval()
    grey = UNet(1).eval()
    grey.load_state_dict(grey_from_rgb(rgb.state_dict()))
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        expected = rgb(x.repeat(1, 3, 1, 1)).mean(dim=1, keepdim=True)
        got = grey(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, x, atol=1e-3)  # a real network output, not the input back
