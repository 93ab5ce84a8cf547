"""Tests of benchmark.engine.attribution: batched per-neuron attributions (PURE, Dreyer et al. 2024)
against a closed form, a literal per-image per-neuron autograd loop, the neuron-by-neuron
reference, IG identities, and zennit LRP leaving the model untouched."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmark.engine.attribution import BACKENDS, neuron_attributions, neuron_attributions_loop
from tests.fakes import TinyNet

HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


class ThreeBlocks(nn.Module):
    """stem -> block1 -> block2 -> head; block2 is non-linear (BN, ReLU, max-pool, bias)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.block1 = nn.Sequential(nn.Conv2d(6, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(5, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                    nn.MaxPool2d(2), nn.Conv2d(8, 7, 1))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(7, 3))
        for bn in (self.block1[1], self.block2[1]):  # non-trivial eval statistics
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.1, 0.1)

    def forward(self, x):
        return self.head(self.block2(self.block1(self.stem(x))))


def literal(model: ThreeBlocks, images: torch.Tensor, channels) -> torch.Tensor:
    """The PURE formula written plainly: per image, per neuron, one autograd call."""
    out = torch.zeros(len(channels), images.shape[0], 5)
    for n in range(images.shape[0]):
        with torch.no_grad():
            x = model.block1(model.stem(images[n:n + 1]))
        for g, c in enumerate(channels):
            xr = x.clone().requires_grad_(True)
            a = model.block2(xr)[0, c]
            (grad,) = torch.autograd.grad((a.clamp(min=0).detach() * a).sum(), xr)
            r = (grad * xr)[0].sum((1, 2)).detach()
            out[g, n] = r / (r.abs().sum() + 1e-10)
    return out


@pytest.fixture(scope="module")
def blocks():
    return ThreeBlocks().eval(), torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def test_batched_equals_loop_and_literal(blocks):
    model, images = blocks
    channels = [6, 0, 3, 1, 5, 2, 4]
    expected = literal(model, images, channels)
    for chunk in (None, 3, 1):  # one backward for all, uneven chunks, one neuron each
        got = neuron_attributions(model, "block2", "block1", images, channels, chunk=chunk)
        assert got.shape == (7, 5, 5)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    loop = neuron_attributions_loop(model, "block2", "block1", images, channels)
    torch.testing.assert_close(loop, expected, atol=1e-5, rtol=0)
    assert expected.abs().sum() > 0


def test_closed_form_for_a_linear_layer_on_its_input():
    """TinyNet.conv2 is a 1x1 conv without bias: a_c = sum_j W[c,j] x_j, hence
    r_j = W[c,j] * sum_hw x_j * max(a_c, 0) (before normalisation)."""
    model = TinyNet(seed=3).eval()
    images = torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(2))
    x = model.act1(model.conv1(images)).detach()
    w = model.conv2.weight[:, :, 0, 0].detach()
    a = torch.einsum("cj,njhw->nchw", w, x)
    expected = torch.stack([w[c] * (x * a[:, c:c + 1].clamp(min=0)).sum((2, 3)) for c in range(6)])
    got = neuron_attributions(model, "conv2", None, images, range(6), normalize=False)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # Euler's identity for this homogeneous span: sum_j r_j = sum_hw max(a_c, 0) * a_c
    torch.testing.assert_close(got.sum(-1), (a.clamp(min=0) * a).sum((2, 3)).T, atol=1e-4, rtol=1e-5)
    # the lower layer named explicitly (act1 outputs conv2's input) gives the same vectors
    torch.testing.assert_close(neuron_attributions(model, "conv2", "act1", images, range(6), normalize=False), got)
    normed = neuron_attributions(model, "conv2", None, images, [2, 4])
    torch.testing.assert_close(normed, expected[[2, 4]] / (expected[[2, 4]].abs().sum(-1, keepdim=True) + 1e-10))


def test_integrated_gradients_equals_gradient_x_input_on_a_linear_span():
    model = TinyNet(seed=1).eval()
    images = torch.randn(3, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    grad = neuron_attributions(model, "conv2", None, images, range(6), normalize=False)
    ig = neuron_attributions(model, "conv2", None, images, range(6), backend="integrated_gradients",
                             normalize=False, steps=7)
    torch.testing.assert_close(ig, grad, atol=1e-5, rtol=1e-5)


def test_integrated_gradients_completeness_on_a_nonlinear_span(blocks):
    """sum_j r_j = F(x) - F(0) with F(x') = sum_hw s * a_c(x'), s = max(a_c(x), 0)."""
    model, images = blocks
    channels = [0, 3, 6]
    ig = neuron_attributions(model, "block2", "block1", images, channels, backend="integrated_gradients",
                             normalize=False, steps=256)
    with torch.no_grad():
        x = model.block1(model.stem(images))
        a, a0 = model.block2(x), model.block2(torch.zeros_like(x))
    for g, c in enumerate(channels):
        s = a[:, c].clamp(min=0)
        expected = (s * a[:, c]).sum((1, 2)) - (s * a0[:, c]).sum((1, 2))
        torch.testing.assert_close(ig[g].sum(-1), expected, atol=2e-3, rtol=2e-3)
    grad = neuron_attributions(model, "block2", "block1", images, channels, normalize=False)
    assert (ig - grad).abs().max() > 1e-3  # a non-linear span: IG is not gradient x input


def _small_resnet():
    """A torchvision ResNet with one BasicBlock per stage (resnet18's widths), random weights."""
    from torchvision.models.resnet import BasicBlock, ResNet

    torch.manual_seed(0)
    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-0.1, 0.1)
    return model


def test_lrp_on_a_resnet_runs_and_leaves_the_model_untouched():
    model = _small_resnet()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        logits = model(images)
    channels = [0, 7, 11]
    lrp = neuron_attributions(model, "layer4", "layer3", images, channels, backend="lrp")
    lrp_loop = neuron_attributions_loop(model, "layer4", "layer3", images, channels, backend="lrp")
    grad = neuron_attributions(model, "layer4", "layer3", images, channels)
    assert lrp.shape == (3, 2, 256) and torch.isfinite(lrp).all() and lrp.abs().sum() > 0
    torch.testing.assert_close(lrp, lrp_loop, atol=1e-5, rtol=0)
    assert (lrp - grad).abs().max() > 1e-3  # the composite's rules were in effect
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))  # merged biases removed
    assert not [n for n, m in model.named_modules() for d in HOOK_DICTS if getattr(m, d)]
    assert not any("forward" in vars(m) for m in model.modules())  # canonizer forwards reverted
    with torch.no_grad():
        assert torch.equal(model(images), logits)
    assert not model.training


def test_train_mode_model_is_restored_and_statistics_unchanged(blocks):
    model, images = blocks
    model.train()
    try:
        stats = model.block1[1].running_mean.clone()
        neuron_attributions(model, "block2", "block1", images, [0])
        assert model.training and torch.equal(model.block1[1].running_mean, stats)
        assert all(p.grad is None for p in model.parameters())
    finally:
        model.eval()


def test_specific_errors(blocks):
    model, images = blocks
    with pytest.raises(ValueError, match="unknown attribution backend 'saliency'.*gradient"):
        neuron_attributions(model, "block2", "block1", images, [0], backend="saliency")
    with pytest.raises(IndexError, match="channel 7 out of range"):
        neuron_attributions(model, "block2", "block1", images, [7])
    with pytest.raises(ValueError, match="channels is empty"):
        neuron_attributions(model, "block2", "block1", images, [])
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        neuron_attributions(model, "block2", "block1", images, [0], chunk=0)
    with pytest.raises(ValueError, match="not computed before"):
        neuron_attributions(model, "block1", "block2", images, [0])
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        neuron_attributions(model, "block2", "block1", images[0], [0])
    with pytest.raises(ValueError, match="steps >= 1"):
        neuron_attributions(model, "block2", "block1", images, [0], backend="integrated_gradients", steps=0)
    assert set(BACKENDS) >= {"gradient", "lrp", "integrated_gradients"}


def test_skip_connection_across_the_lower_layer_is_reported():
    """A residual block whose skip bypasses the chosen lower layer is not a cut."""

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.inner = nn.Conv2d(3, 3, 1)
            self.block = nn.Identity()

        def forward(self, x):
            h = self.conv(x)
            return self.block(self.inner(h) + h)

    model = Residual().eval()
    images = torch.randn(3, 3, 4, 4)
    with pytest.raises(ValueError, match="cuts the network"):
        neuron_attributions(model, "block", "inner", images, [0, 1])


def previous_implementation(model, layer, lower, images, channels):
    """The former gradient path: a reference forward, then the registered backend (vmapped
    backward over neuron cotangents, a separate forward of the span)."""
    from benchmark.engine.attribution import _finish, _prepare

    with torch.enable_grad():
        span, x, z, chans = _prepare(model, layer, lower, images, channels, "gradient")
        seeds = z[:, chans].clamp(min=0).transpose(0, 1)
        return _finish(BACKENDS["gradient"](span, x, seeds, chans), True)


@pytest.mark.parametrize("layer,lower", [("block2", "block1"), ("block2", None)])
def test_single_neuron_and_shared_paths_equal_the_previous_implementation(blocks, layer, lower):
    from benchmark.engine.attribution import reference_attributions
    from tests.fakes import TensorImages

    model, images = blocks
    channels = [6, 0, 3]
    before = previous_implementation(model, layer, lower, images, channels)
    assert before.abs().sum() > 0
    for c_i, c in enumerate(channels):  # single-neuron path: one forward, one plain backward
        torch.testing.assert_close(neuron_attributions(model, layer, lower, images, [c])[0], before[c_i],
                                   atol=1e-6, rtol=0)
    torch.testing.assert_close(neuron_attributions(model, layer, lower, images, channels), before, atol=1e-6, rtol=0)
    # every channel on its own images; one forward per batch of the union, batches of 2
    data = TensorImages(images, torch.zeros(images.shape[0], dtype=torch.long), 1)
    own = {6: [0, 2, 4], 0: [1, 2], 3: [3]}
    shared = reference_attributions(model, layer, lower, data, own, batch_size=2, device="cpu")
    for c, ids in own.items():
        torch.testing.assert_close(shared[c], before[channels.index(c), ids], atol=1e-6, rtol=0)
