"""Receptive-field crops (benchmark.crops) on a hand-built net whose neuron sees a known patch."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmark.crops import (crop_and_resize, crop_boxes, denormalize, neuron_heatmaps, normalize,
                             receptive_field_crops)

H = W = 32
# The neuron is non-zero only at output rows 10..13, cols 20..23; a 3x3 conv (padding 1)
# makes its receptive field input rows 9..14 and cols 19..24 (end-exclusive: 9:15, 19:25).
PATCH = (9, 15, 19, 25)


class PatchNet(nn.Module):
    """conv (all-ones 3x3) -> mask to a 4x4 window -> BatchNorm (to check eval mode)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.conv.weight[1] *= -1.0  # channel 1 is never positive on positive images
        mask = torch.zeros(1, 1, H, W)
        mask[..., 10:14, 20:24] = 1.0
        self.register_buffer("mask", mask)
        self.feat = nn.Identity()
        self.bn = nn.BatchNorm2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.feat(self.conv(x) * self.mask))


@pytest.fixture
def net() -> PatchNet:
    return PatchNet()


@pytest.fixture
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return 0.1 + 0.9 * torch.rand(3, 3, H, W, generator=g)  # strictly positive pixels


def test_heatmap_support_is_the_receptive_field(net, images):
    heat = neuron_heatmaps(net, "feat", 0, images)
    assert heat.shape == (3, H, W)
    support = heat > 0
    expected = torch.zeros(H, W, dtype=torch.bool)
    expected[PATCH[0]:PATCH[1], PATCH[2]:PATCH[3]] = True
    assert torch.equal(support, expected.expand(3, H, W))


def test_heatmap_is_gradient_times_input(net, images):
    # d(sum max(a,0))/dx for an all-ones 3x3 conv = number of masked outputs whose window
    # covers the pixel (all outputs are positive); R = |x * grad| summed over colour.
    count = torch.nn.functional.conv2d(net.mask, torch.ones(1, 1, 3, 3), padding=1)[0, 0]
    expected = (images * count).abs().sum(dim=1)
    assert torch.allclose(neuron_heatmaps(net, "feat", 0, images), expected, atol=1e-5)


def test_unblurred_box_is_exactly_the_patch(net, images):
    heat = neuron_heatmaps(net, "feat", 0, images)
    boxes = crop_boxes(heat, threshold=0.02, kernel_size=1, square=False)
    assert boxes.tolist() == [list(PATCH)] * 3


def test_blurred_square_box_covers_the_patch(net, images):
    heat = neuron_heatmaps(net, "feat", 0, images)
    for top, bottom, left, right in crop_boxes(heat).tolist():  # kernel 5, 2 %, square
        assert bottom - top == right - left
        assert top <= PATCH[0] and bottom >= PATCH[1] and left <= PATCH[2] and right >= PATCH[3]
        # the blur (radius 2) widens the box by at most 2 pixels per side
        assert top >= PATCH[0] - 2 and bottom <= PATCH[1] + 2 and left >= PATCH[2] - 2 and right <= PATCH[3] + 2


def test_square_box_is_shifted_inside_the_image():
    heat = torch.zeros(1, 10, 10)
    heat[0, 0, 0:6] = 1.0  # a 1 x 6 strip on the top edge
    assert crop_boxes(heat, kernel_size=1).tolist() == [[0, 6, 0, 6]]


def test_crop_content_and_size(net, images):
    crops = receptive_field_crops(net, "feat", 0, images, out_size=6, kernel_size=1, square=False)
    assert crops.shape == (3, 3, 6, 6)
    assert torch.allclose(crops, images[:, :, 9:15, 19:25], atol=1e-6)  # same size: no resampling
    big = receptive_field_crops(net, "feat", 0, images, out_size=48)
    assert big.shape == (3, 3, 48, 48)


def test_silent_neuron_keeps_the_whole_image(net, images):
    boxes = crop_boxes(neuron_heatmaps(net, "feat", 1, images))
    assert boxes.tolist() == [[0, H, 0, W]] * 3


def test_virtual_neuron_callable(images):
    def neuron(x: torch.Tensor) -> torch.Tensor:  # sees only rows 2..5, cols 3..6 of channel 0
        return x[:, 0, 2:6, 3:7] * 2.0

    heat = neuron_heatmaps(None, None, neuron, images)
    assert crop_boxes(heat, kernel_size=1, square=False).tolist() == [[2, 6, 3, 7]] * 3
    assert receptive_field_crops(None, None, neuron, images, out_size=8).shape == (3, 3, 8, 8)


def test_batched_equals_one_by_one(net, images):
    together = receptive_field_crops(net, "feat", 0, images, out_size=16, batch_size=64)
    single = receptive_field_crops(net, "feat", 0, images, out_size=16, batch_size=1)
    assert torch.allclose(together, single, atol=1e-6)


def test_model_is_not_changed(net, images):
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    crops = receptive_field_crops(net, "bn", 0, images)  # the pass goes through BatchNorm
    assert torch.equal(crops, receptive_field_crops(net, "feat", 0, images))  # BN ran in eval mode
    assert net.training and net.bn.training  # flags restored
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # no BN stat updates
    assert all(p.grad is None for p in net.parameters())
    assert not net.feat._forward_hooks and not net.bn._forward_hooks


def test_normalize_round_trip(images):
    assert torch.allclose(denormalize(normalize(images)), images, atol=1e-6)
    assert torch.allclose(normalize(images, (0.5,) * 3, (0.25,) * 3), (images - 0.5) / 0.25)


def test_bad_inputs(net, images):
    with pytest.raises(IndexError, match="out of range"):
        receptive_field_crops(net, "feat", 5, images)
    with pytest.raises(TypeError, match="int channel or a callable"):
        receptive_field_crops(net, "feat", 0.5, images)
    with pytest.raises(KeyError, match="no layer 'nope'.*Close valid names"):
        receptive_field_crops(net, "nope", 0, images)
    with pytest.raises(ValueError, match="threshold"):
        crop_boxes(torch.ones(1, 4, 4), threshold=1.5)
    with pytest.raises(ValueError, match="odd"):
        crop_boxes(torch.ones(1, 4, 4), kernel_size=4)
    assert crop_and_resize(images[:0], torch.zeros(0, 4, dtype=torch.long), 8).shape == (0, 3, 8, 8)
