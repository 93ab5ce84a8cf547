"""PURE's attribution vectors (benchmark.engine.attribution, batched over neurons) equal the
ones the authors' library computes (zennit-crp CondAttribution, one conditional backward per
neuron, started at the neuron with its positive activation, relevance recorded at the lower
layer, no LRP rule: the plain gradient), to 1e-5, on a small CNN and a ResNet."""
import pytest
import torch
import torchvision

from benchmark.engine.attribution import neuron_attributions
from benchmark.run.crp_bench import crp_attributions, crp_available
from tests.fakes import TinyNet


def test_zennit_crp_is_installed():
    assert crp_available(), "zennit-crp is installed by the Makefile (pip install --no-deps zennit-crp==0.6.0)"


@pytest.mark.parametrize("net, layer, lower, shape, channels", [
    ("tiny", "conv2", "act1", (6, 3, 12, 12), [0, 2, 5]),
    ("resnet18", "layer4", "layer3", (3, 3, 64, 64), [1, 7, 100, 511]),
    ("resnet18", "layer3.1.conv2", "layer3.1.conv1", (2, 3, 64, 64), [0, 33]),
])
def test_batched_attributions_equal_crp_condattribution(net, layer, lower, shape, channels):
    torch.manual_seed(0)
    model = TinyNet().eval() if net == "tiny" else torchvision.models.resnet18().eval()
    images = torch.randn(*shape)
    ours = neuron_attributions(model, layer, lower, images, channels)
    theirs = crp_attributions(model, layer, lower, images, channels)
    assert ours.shape == theirs.shape == (len(channels), shape[0], ours.shape[-1])
    assert theirs.abs().sum() > 0  # a non-trivial reference
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    swapped = crp_attributions(model, layer, lower, images, channels[::-1])
    assert (ours - swapped).abs().max() > 1e-3  # the comparison tells neurons apart
