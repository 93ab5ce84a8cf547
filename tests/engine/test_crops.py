"""PURE's reference crops (benchmark.engine.crops): hand-made heatmaps with hand-computed boxes, the
max-position seed, and the LRP composite path on a small torchvision ResNet."""
from __future__ import annotations

import torch
import torchvision
from torch import nn

from benchmark.engine.crops import (
    blurred_abs,
    crop,
    denormalize,
    embed_native,
    lrp_composite,
    lrp_heatmaps,
    max_position_seed,
    normalize,
    pure_box,
    pure_crops,
)

H = W = 32


def deltas(*points, value=1.0, size=(H, W)) -> torch.Tensor:
    heat = torch.zeros(size)
    for r, c in points:
        heat[r, c] = value
    return heat


# A unit delta blurred with kernel 5 (torchvision's default sigma 1.1) has normalised weights
# 1, 0.66, 0.19 at offsets 0, 1, 2, so its 5x5 support is above 2% everywhere (corner
# 0.19^2 = 0.037): rows/cols centre-2 .. centre+2, and PURE's slice ends at the last one
# EXCLUSIVE (that row and column are dropped).

def test_single_delta_box_drops_last_row_and_column():
    assert pure_box(deltas((10, 20))) == (8, 12, 18, 22)


def test_wide_box_is_squared_by_growing_the_short_side():
    # cols 18..28, rows 8..12 -> dr = 4, dc = 10 -> rows grow by (10 - 4) // 2 = 3 each side
    assert pure_box(deltas((10, 20), (10, 26))) == (5, 15, 18, 28)


def test_box_shifts_down_at_the_top_edge_but_not_up_at_the_bottom():
    # reflect padding keeps rows 0..2 above 2%; dr = 2, dc = 14 -> grow 6 -> top -6 -> shifted to 0
    assert pure_box(deltas((0, 10), (0, 20))) == (0, 14, 8, 22)
    # at the bottom PURE does not shift: the slice runs past the image and is clipped
    top, bottom, left, right = pure_box(deltas((31, 10), (31, 20)))
    assert (top, bottom, left, right) == (23, 37, 8, 22)
    image = torch.rand(3, H, W) + 0.1
    patch = crop(image, deltas((31, 10), (31, 20)))
    assert patch.shape == (3, 9, 14)  # not square: rows 23..31 only


def test_signed_heatmap_is_blurred_before_the_absolute_value():
    # +1 and -1 at adjacent pixels partly cancel in the blur: abs is taken AFTER the blur.
    heat = deltas((10, 10)) - deltas((10, 11))
    norm = blurred_abs(heat)
    assert float(norm.max()) == 1.0
    blurred_then_abs = blurred_abs(heat)
    abs_then_blurred = blurred_abs(heat.abs())
    assert not torch.allclose(blurred_then_abs, abs_then_blurred)
    # a far negative delta counts like a positive one: rows 8..22, cols 3..22, dr = 14 < dc = 19,
    # so the rows grow by (19 - 14) // 2 = 2 on each side
    assert pure_box(deltas((10, 20)) - deltas((20, 5))) == (6, 24, 3, 22)


def test_threshold_is_two_percent_of_the_blurred_max():
    heat = deltas((10, 20)) + deltas((25, 5), value=0.01)  # 1% of the peak: below 2% after the blur
    assert pure_box(heat) == (8, 12, 18, 22)
    heat = deltas((10, 20)) + deltas((25, 5), value=0.2)  # blurred peak 0.2 * w0 > 2% of the max
    top, bottom, left, right = pure_box(heat)
    assert top <= 23 and bottom >= 27 - 1 and left <= 3


def test_empty_heatmap_gives_the_whole_image():
    image = torch.rand(3, H, W) + 0.1
    assert pure_box(torch.zeros(H, W)) == (0, H - 1, 0, W - 1)
    assert torch.equal(crop(image, torch.zeros(H, W)), image)


def test_max_position_seed_keeps_only_the_maximum():
    acts = torch.tensor([[[0.0, 2.0], [3.0, -1.0]], [[5.0, 5.0], [1.0, 0.0]]])
    seed = max_position_seed(acts)
    assert torch.equal(seed, torch.tensor([[[0.0, 0.0], [3.0, 0.0]], [[5.0, 0.0], [0.0, 0.0]]]))


class PatchNet(nn.Module):
    """conv (3x3 ones) -> x mask (rows 10..13, cols 20..23) -> identity 'feat'."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
        mask = torch.zeros(1, 1, H, W)
        mask[..., 10:14, 20:24] = 1.0
        self.register_buffer("mask", mask)
        self.feat = nn.Identity()

    def forward(self, x):
        return self.feat(self.conv(x) * self.mask)


def test_heatmap_is_seeded_at_the_maximum_position_only():
    x = torch.full((1, 3, H, W), 0.5)
    x[..., 12, 22] = 5.0  # every output whose 3x3 window holds (12, 22) ties for the maximum
    heat = lrp_heatmaps(PatchNet(), "feat", 0, x)
    support = heat[0].abs() > 0
    rows, cols = torch.where(support)
    # ties -> the first in row-major order, output (11, 21), whose 3x3 receptive field is
    # input rows 10..12, cols 20..22 (one position, not the whole 4x4 activation window)
    assert (int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())) == (10, 12, 20, 22)
    # the crop of that heatmap: the 3x3 window blurred, cut at 2%
    patch = pure_crops(PatchNet(), "feat", 0, x)[0]
    assert patch.shape[-2:] == crop(x[0], heat[0]).shape[-2:]
    assert patch.shape[-1] < W and patch.shape[-2] < H  # native size, not resized


def _small_resnet():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, so the canonizer matters
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


def test_lrp_composite_path_on_a_resnet_matches_zennit_and_leaves_the_model_alone():
    from zennit.attribution import Gradient
    from zennit.torchvision import ResNetCanonizer

    model = _small_resnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    composite = lrp_composite(model)
    assert any(isinstance(c, ResNetCanonizer) for c in composite.canonizers)
    x = torch.randn(2, 3, 64, 64)
    heat = lrp_heatmaps(model, "layer1", 3, x)
    assert heat.shape == (2, 64, 64)
    # the same relevance by zennit's own attributor on the truncated network
    trunk = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, model.layer1)
    with torch.no_grad():
        z = trunk(x)
    seed = torch.zeros_like(z)
    seed[:, 3] = max_position_seed(z[:, 3])
    with Gradient(model=trunk, composite=lrp_composite(model)) as attributor:
        _, relevance = attributor(x, seed)
    assert torch.allclose(heat, relevance.sum(1), rtol=1e-4, atol=1e-6)
    # LRP is not the plain gradient (the composite really acts)
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(trunk(xg), xg, grad_outputs=seed)
    assert not torch.allclose(heat, (g * x).sum(1), atol=1e-3)
    # the caller's model: same weights, no hooks left behind
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks or m._backward_hooks or m._forward_pre_hooks for m in model.modules())


def test_embed_native_keeps_input_order_across_sizes():
    class Mean:
        def embed(self, images):
            return torch.stack([images.mean((1, 2, 3)), torch.full((images.shape[0],), float(images.shape[-1]))], 1)

    crops = [torch.full((3, 4, 4), 0.1), torch.full((3, 6, 6), 0.2), torch.full((3, 4, 4), 0.3)]
    emb = embed_native(Mean(), crops)
    assert torch.allclose(emb[:, 0], torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64))
    assert emb[:, 1].tolist() == [4.0, 6.0, 4.0]


def test_normalize_roundtrip():
    x = torch.rand(2, 3, 5, 5)
    assert torch.allclose(denormalize(normalize(x)), x, atol=1e-6)
