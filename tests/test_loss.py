"""Neighbor2Neighbor loss against a hand computation, f(y) without gradient, gamma schedule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from n2ncli.errors import ConfigError
from n2ncli.loss import GammaSchedule, level_weights, n2n_loss
from n2ncli.sampler import draw_pair_indices, subsample_pair

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny_net(seed: int = 0) -> nn.Module:
    """Two small convs: non-linear, any spatial size, a handful of parameters (float32)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 3, 3, padding=1))


def _noisy(seed: int = 1, shape: tuple[int, ...] = (2, 3, 12, 16)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=torch.float32)


def _masks(noisy: torch.Tensor, seed: int, sampler: str = "random"):
    n, _, h, w = noisy.shape
    return draw_pair_indices(n, h, w, mode=sampler, generator=torch.Generator().manual_seed(seed))


def _hand_loss(model: nn.Module, noisy: torch.Tensor, gamma: float, seed: int, sampler: str = "random",
               detach_full: bool = True):
    positions = _masks(noisy, seed, sampler)
    g1, g2 = subsample_pair(noisy, positions)
    full = model(noisy)
    if detach_full:
        full = full.detach()
    f1, f2 = subsample_pair(full, positions)
    pred = model(g1)
    rec = ((pred - g2) ** 2).mean()
    reg = ((pred - g2 - (f1 - f2)) ** 2).mean()
    return rec + gamma * reg, rec, reg


@pytest.mark.parametrize("sampler", ["random", "fixed"])
def test_gamma_zero_is_the_reconstruction_term(sampler: str) -> None:
    model, noisy = _tiny_net(), _noisy()
    terms = n2n_loss(model, noisy, 0.0, sampler=sampler, generator=torch.Generator().manual_seed(5))
    _, rec, _ = _hand_loss(model, noisy, 0.0, seed=5, sampler=sampler)
    assert torch.allclose(terms.total, rec, rtol=1e-6, atol=1e-9)
    assert torch.allclose(terms.reconstruction, rec, rtol=1e-6, atol=1e-9)


def test_regulariser_and_total_match_the_hand_computation() -> None:
    model, noisy = _tiny_net(), _noisy()
    gamma = 1.7
    terms = n2n_loss(model, noisy, gamma, generator=torch.Generator().manual_seed(9))
    total, rec, reg = _hand_loss(model, noisy, gamma, seed=9)
    assert torch.allclose(terms.regulariser, reg, rtol=1e-6, atol=1e-9)
    assert torch.allclose(terms.reconstruction, rec, rtol=1e-6, atol=1e-9)
    assert torch.allclose(terms.total, total, rtol=1e-6, atol=1e-9)
    assert float(terms.regulariser) > 0


def test_reported_terms_are_detached_and_total_carries_gradient() -> None:
    terms = n2n_loss(_tiny_net(), _noisy(), 2.0, generator=torch.Generator().manual_seed(0))
    assert terms.total.requires_grad
    assert not terms.reconstruction.requires_grad
    assert not terms.regulariser.requires_grad


def _grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


def test_full_image_prediction_carries_no_gradient() -> None:
    noisy, gamma, seed = _noisy(), 2.0, 13

    model = _tiny_net()
    n2n_loss(model, noisy, gamma, generator=torch.Generator().manual_seed(seed)).total.backward()
    got = _grads(model)

    ref = _tiny_net()
    _hand_loss(ref, noisy, gamma, seed, detach_full=True)[0].backward()
    detached = _grads(ref)

    ref.zero_grad()
    _hand_loss(ref, noisy, gamma, seed, detach_full=False)[0].backward()
    through_full = _grads(ref)

    for a, b in zip(got, detached):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-8)
    # the check is sensitive: letting gradient flow through f(y) changes the gradients
    assert any(not torch.allclose(a, b, rtol=1e-3, atol=1e-6) for a, b in zip(got, through_full))


def test_same_generator_seed_gives_the_same_loss() -> None:
    model, noisy = _tiny_net(), _noisy()
    a = n2n_loss(model, noisy, 1.0, generator=torch.Generator().manual_seed(3)).total
    b = n2n_loss(model, noisy, 1.0, generator=torch.Generator().manual_seed(3)).total
    c = n2n_loss(model, noisy, 1.0, generator=torch.Generator().manual_seed(4)).total
    assert float(a.detach()) == float(b.detach())
    assert float(a.detach()) != float(c.detach())


def test_gamma_ramps_linearly_from_zero_to_end() -> None:
    schedule = GammaSchedule(2.0)
    assert schedule(0.0) == 0.0
    assert schedule(0.25) == pytest.approx(0.5)
    assert schedule(0.5) == pytest.approx(1.0)
    assert schedule(1.0) == pytest.approx(2.0)


def test_gamma_ramp_with_a_start_value() -> None:
    schedule = GammaSchedule(end=3.0, start=1.0)
    assert schedule(0.0) == pytest.approx(1.0)
    assert schedule(0.5) == pytest.approx(2.0)
    assert schedule(1.0) == pytest.approx(3.0)


@pytest.mark.parametrize(("progress", "expected"), [(-0.5, 0.0), (1.5, 2.0), (10.0, 2.0)])
def test_gamma_clamps_progress(progress: float, expected: float) -> None:
    assert GammaSchedule(2.0)(progress) == pytest.approx(expected)


@pytest.mark.parametrize("progress", [0.0, 0.3, 1.0, 2.0])
def test_constant_gamma(progress: float) -> None:
    assert GammaSchedule(1.0, constant=True)(progress) == 1.0


@pytest.mark.parametrize(("end", "start"), [(-1.0, 0.0), (-0.001, 0.0), (2.0, -1.0)])
def test_negative_gamma_is_a_config_error(end: float, start: float) -> None:
    with pytest.raises(ConfigError, match="regulariser weight"):
        GammaSchedule(end=end, start=start)


def test_an_independent_target_replaces_g2_only() -> None:
    def identity(x: torch.Tensor) -> torch.Tensor:
        return x

    noisy = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    same = n2n_loss(identity, noisy, 1.0, generator=torch.Generator().manual_seed(1))
    itself = n2n_loss(identity, noisy, 1.0, generator=torch.Generator().manual_seed(1), target=noisy)
    assert torch.equal(same.total, itself.total)
    zeros = n2n_loss(identity, noisy, 0.0, generator=torch.Generator().manual_seed(1), target=torch.zeros_like(noisy))
    positions = draw_pair_indices(2, 16, 16, generator=torch.Generator().manual_seed(1))
    g1 = subsample_pair(noisy, positions)[0]
    assert float(zeros.reconstruction) == pytest.approx(float(g1.square().mean()))


def test_full_stride_computes_f_of_y_through_pd_sub_images() -> None:
    def identity(x: torch.Tensor) -> torch.Tensor:
        return x

    noisy = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    plain = n2n_loss(identity, noisy, 2.0, generator=torch.Generator().manual_seed(2))
    pd = n2n_loss(identity, noisy, 2.0, generator=torch.Generator().manual_seed(2), full_stride=2)
    assert torch.allclose(plain.total, pd.total)  # split then merge of an identity is the identity


def test_clip_aware_loss_leaves_out_clipped_targets() -> None:
    def identity(x: torch.Tensor) -> torch.Tensor:
        return x

    noisy = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25
    clipped = noisy.clone()
    clipped[..., :8, :] = 1.0  # a blown-out top half: its targets say nothing about the noise
    a = n2n_loss(identity, noisy, 1.0, generator=torch.Generator().manual_seed(3), clip_aware=True)
    b = n2n_loss(identity, clipped, 1.0, generator=torch.Generator().manual_seed(3), clip_aware=True)
    c = n2n_loss(identity, clipped, 1.0, generator=torch.Generator().manual_seed(3))
    assert float(b.reconstruction) > 0  # only the unclipped half counts, as a mean over it
    assert float(c.reconstruction) < float(b.reconstruction)  # plain: the zero-difference clipped half dilutes it
    assert torch.isfinite(a.total)


def test_level_weights_favour_the_quieter_image_as_a_power_of_its_variance() -> None:
    g = torch.Generator().manual_seed(3)
    clean = torch.rand(2, 3, 64, 64, generator=g)
    sigma = torch.tensor([5.0, 50.0]).view(2, 1, 1, 1) / 255
    first = clean + sigma * torch.randn(clean.shape, generator=g)
    second = clean + sigma * torch.randn(clean.shape, generator=g)
    w = level_weights(first, second, 0.65)
    assert w.mean().item() == pytest.approx(1.0)
    # variance ratio 100 -> weight ratio 100^0.65 = 19.95 (the measured variances are within ~3 %)
    assert (w[0] / w[1]).item() == pytest.approx(100**0.65, rel=0.05)
    assert torch.allclose(level_weights(first, second, 0.0), torch.ones(2))


def test_weighted_loss_is_the_weighted_mean_of_each_images_loss() -> None:
    net, noisy = _tiny_net(), _noisy(shape=(2, 3, 12, 16))
    gens = [torch.Generator().manual_seed(5), torch.Generator().manual_seed(6)]
    plain = n2n_loss(net, noisy, 1.0, generator=gens)
    gens = [torch.Generator().manual_seed(5), torch.Generator().manual_seed(6)]
    even = n2n_loss(net, noisy, 1.0, generator=gens, weights=torch.ones(2))
    assert torch.allclose(plain.total, even.total)
    per = []
    for i, seed in enumerate((5, 6)):
        per.append(n2n_loss(net, noisy[i:i + 1], 1.0, generator=[torch.Generator().manual_seed(seed)]).total)
    gens = [torch.Generator().manual_seed(5), torch.Generator().manual_seed(6)]
    weighted = n2n_loss(net, noisy, 1.0, generator=gens, weights=torch.tensor([3.0, 1.0]))
    assert weighted.total.item() == pytest.approx((3 * per[0] + per[1]).item() / 4, rel=1e-5)
    assert weighted.total.item() != pytest.approx(plain.total.item(), rel=1e-3)
