"""Feature-visualisation backends (every entry of FEATURE_VIS) and objective helpers."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from benchmark.core.registry import FEATURE_VIS
from benchmark.core.types import Split, Target
from benchmark.engine.fvis._common import Rendering, identity, mean_std_normalize
from benchmark.engine.fvis._objectives import channel_objective, direction_objective, module_output, split_objective
from benchmark.engine.fvis.maco import COLOR_CORRELATION, MACO, magnitude_spectrum, one_over_f_spectrum

BACKENDS = FEATURE_VIS.names()
STEPS = 16
LAYER = "3"  # second conv, before its ReLU


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 12, 3, padding=1, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 5),
    ).eval()


@pytest.fixture(scope="module")
def net() -> nn.Module:
    return tiny_cnn()


def backend(name: str, **kw) -> object:
    return FEATURE_VIS.get(name)(**{"steps": STEPS, "image_size": 32, **kw})


def two_virtual_neurons(net: nn.Module) -> Split:
    """A gating split of channel 0 whose 'virtual neurons' are channels 2 and 7 (any
    differentiable (N, k, H, W) function will do for rendering)."""
    return Split(target=Target("tiny", LAYER, 0), method="test", k=2, recomposition="gating",
                 virtual_fn=lambda x: module_output(net, LAYER, x)[:, [2, 7]])


@pytest.mark.parametrize("name", BACKENDS)
def test_channels_rise_in_one_batch(name, net):
    out = backend(name).render(channel_objective(net, LAYER, [3, 9]), 2, mean_std_normalize())
    assert isinstance(out, Rendering)
    assert out.images.shape == (2, 3, 32, 32)
    assert out.images.min() >= 0 and out.images.max() <= 1
    assert out.start_scores.shape == out.end_scores.shape == (2,)
    assert (out.end_scores > out.start_scores).all(), (out.start_scores, out.end_scores)
    # the recorded end score is the objective of the returned images
    again = channel_objective(net, LAYER, [3, 9])(mean_std_normalize()(out.images))
    assert torch.allclose(again, out.end_scores, atol=1e-5)


@pytest.mark.parametrize("name", BACKENDS)
def test_virtual_neurons_rise(name, net):
    split = two_virtual_neurons(net)
    out = backend(name).render(split_objective(split), split.k, identity)
    assert out.images.shape == (2, 3, 32, 32)
    assert (out.gain > 0).all(), (out.start_scores, out.end_scores)


@pytest.mark.parametrize("name", BACKENDS)
def test_seeded_and_model_untouched(name):
    net = tiny_cnn().train()  # render must switch to eval and back, and never update BN statistics
    before = {k: v.clone() for k, v in net.state_dict().items()}
    obj = channel_objective(net, LAYER, 4)
    torch.manual_seed(123)
    a = backend(name, steps=4).render(obj, 1, identity)
    after_global = torch.rand(3)
    torch.manual_seed(123)
    expected_global = torch.rand(3)
    b = backend(name, steps=4).render(obj, 1, identity)
    c = backend(name, steps=4, seed=1).render(obj, 1, identity)
    assert net.training and all(m.training for m in net.modules())
    assert torch.equal(a.images, b.images) and torch.equal(a.end_scores, b.end_scores)
    assert not torch.equal(a.images, c.images)
    assert torch.equal(after_global, expected_global)  # the global RNG stream is left alone
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())
    assert all(not m._forward_hooks for m in net.modules())


@pytest.mark.parametrize("name", BACKENDS)
def test_objective_shape_is_checked(name, net):
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        backend(name, steps=1).render(lambda x: x.mean(), 2, identity)
    with pytest.raises(ValueError, match="num"):
        backend(name).render(channel_objective(net, LAYER, 0), 0, identity)


def test_objective_helpers_match_plain_formulas(net):
    x = torch.rand(2, 3, 32, 32)
    acts = net[:4](x)  # output of module "3"
    assert torch.allclose(channel_objective(net, LAYER, [1, 6])(x), acts[[0, 1], [1, 6]].mean(dim=(1, 2)))
    assert torch.allclose(channel_objective(net, LAYER, 5)(x), acts[:, 5].mean(dim=(1, 2)))
    v = torch.randn(12)
    expected = torch.einsum("c,nchw->nhw", v, acts).mean(dim=(1, 2))
    assert torch.allclose(direction_objective(net, LAYER, v)(x), expected, atol=1e-5)
    e3 = torch.zeros(2, 12)
    e3[0, 3] = e3[1, 8] = 1.0
    assert torch.allclose(direction_objective(net, LAYER, e3)(x), acts[[0, 1], [3, 8]].mean(dim=(1, 2)), atol=1e-6)
    assert torch.allclose(split_objective(two_virtual_neurons(net))(x), acts[[0, 1], [2, 7]].mean(dim=(1, 2)))
    with pytest.raises(ValueError, match="one channel per image"):
        channel_objective(net, LAYER, [1, 2, 3])(x)
    with pytest.raises(IndexError, match="out of range"):
        channel_objective(net, LAYER, 12)(x)
    with pytest.raises(KeyError, match="no layer '99'.*Close valid names"):
        channel_objective(net, "99", 0)


def test_one_over_f_spectrum_values():
    s = one_over_f_spectrum(32)
    assert s.shape == (3, 32, 17)
    assert s[0, 0, 0] == 32 and s[0, 0, 1] == 32 and s[0, 0, 2] == 16 and s[0, 2, 0] == 16
    assert torch.isclose(s[1, 3, 4], torch.tensor(1 / (5 / 32)))


def test_magnitude_spectrum_of_constant_images():
    rgb = torch.tensor([0.2, 0.5, 0.7])
    images = rgb.view(1, 3, 1, 1).expand(4, 3, 16, 16)
    mag = magnitude_spectrum(images)
    assert mag.shape == (3, 16, 9)
    dec = torch.linalg.solve(COLOR_CORRELATION, rgb)  # RGB = C @ decorrelated
    assert torch.allclose(mag[:, 0, 0], 16 * dec.abs(), atol=1e-5)  # ortho DC = sqrt(HW) * value
    mag[:, 0, 0] = 0
    assert mag.abs().max() < 1e-5


def test_maco_only_changes_the_phase():
    maco = MACO(image_size=16)
    magnitude = torch.rand(3, 16, 9) + 0.5
    for seed in (0, 1):
        phase = torch.randn(2, 3, 16, 9, generator=torch.Generator().manual_seed(seed))
        img = maco.image(phase, magnitude).double()
        spatial = torch.einsum("nchw,dc->ndhw", torch.logit(img), torch.linalg.inv(COLOR_CORRELATION).double())
        ratio = torch.fft.rfft2(spatial, norm="ortho").abs()[..., 1:8] / magnitude[..., 1:8]
        # one scale per image (the standardisation); interior columns keep the spectrum exactly
        assert torch.allclose(ratio, ratio.mean(dim=(1, 2, 3), keepdim=True), rtol=1e-3)


def test_maco_with_a_data_spectrum(net):
    images = torch.rand(8, 3, 32, 32)
    mag = magnitude_spectrum(images)
    m1, m2 = MACO(magnitude=mag), MACO(magnitude=mag.clone())
    assert m1.spectrum.startswith("data:") and m1 == m2 and m1 != MACO() and MACO().spectrum == "1/f"
    assert dataclasses.replace(m1, steps=3).spectrum == m1.spectrum
    out = dataclasses.replace(m1, steps=STEPS, image_size=48, input_size=32).render(
        channel_objective(net, LAYER, 3), 1, identity)  # spectrum resized to a bigger canvas
    assert out.images.shape == (1, 3, 48, 48) and out.gain.item() > 0
    with pytest.raises(ValueError, match="crop_scale"):
        MACO(crop_scale=(0.8, 0.5))
