"""Family ceilings (methods/ceiling_gating.py, methods/ceiling_surgery.py) on hand-built planted
channels whose answers are known: a 1x1 conv whose two source filters read given input channels."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmark.core.types import Context, Target
from benchmark.engine.capture import CaptureSpec, capture
from benchmark.engine.layers import channel_activation
from benchmark.planting.merge import plant
from methods.ceiling_gating import GatingCeiling
from methods.ceiling_surgery import SurgeryCeiling
from methods.duplicate import Duplicate
from metrics.planted_recovery import PlantedRecovery
from tests.fakes import TensorImages


class _Reader(nn.Module):
    """conv (4 image channels -> 2) read by a linear head; filters given per test."""

    def __init__(self, filters: torch.Tensor):
        super().__init__()
        self.conv = nn.Conv2d(4, 2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(filters.view(2, 4, 1, 1))
        self.head = nn.Linear(2, 2)

    def forward(self, x):
        return self.head(self.conv(x).mean((2, 3)))


def _planted(filters, mixed: bool):
    """(context, target): channels 0 and 1 planted into slot 0; images drive inputs 0-1
    (even images) or 2-3 (odd); with ``mixed`` the other pair is on at a quarter strength."""
    g = torch.Generator().manual_seed(0)
    n = 60
    images = torch.zeros(n, 4, 5, 5)
    labels = torch.arange(n) % 2
    for i in range(n):
        main, other = ([0, 1], [2, 3]) if labels[i] == 0 else ([2, 3], [0, 1])
        images[i, main] = 0.5 + torch.rand(2, 5, 5, generator=g)
        if mixed:
            images[i, other] = 0.25 * torch.rand(2, 5, 5, generator=g)
    data = TensorImages(images, labels)
    model, truth = plant(_Reader(filters).eval(), "conv", [(0, 1)], classes=[((0,), (1,))])
    stats = capture(model, data, CaptureSpec("conv", top_k=n, tau=None), progress=False)
    ctx = Context(model=model, model_name="reader", layer="conv", fit=data, heldout=data, stats=stats,
                  batch_size=32, planted=truth)
    return ctx, Target("reader", "conv", 0, concepts=((0,), (1,)))


DISJOINT = torch.tensor([[1.0, 2.0, 0.0, 0.0], [0.0, 0.0, 1.5, 1.0]])
OVERLAP = torch.tensor([[1.0, 2.0, 0.5, 0.0], [0.8, 0.0, 1.5, 1.0]])


def test_surgery_ceiling_is_the_planted_decomposition_when_the_parts_read_disjoint_inputs():
    ctx, target = _planted(DISJOINT, mixed=True)
    split = SurgeryCeiling(n_ref=30).fit(ctx, target)
    assert split.info["sizes"] == (2, 2)
    x = ctx.heldout.images(range(len(ctx.heldout)))
    with torch.no_grad():
        torch.testing.assert_close(split.activations(x), ctx.planted[0].parts_fn(x), atol=1e-5, rtol=0)
        torch.testing.assert_close(split.model(x), ctx.model(x), atol=1e-5, rtol=0)  # the surgery is exact
    out = PlantedRecovery().score(split, ctx)
    assert out["recovery"] == pytest.approx(1.0, abs=1e-6) and out["ari"] == pytest.approx(1.0)


def test_surgery_ceiling_stays_below_one_when_the_parts_share_inputs():
    ctx, target = _planted(OVERLAP, mixed=True)
    split = SurgeryCeiling(n_ref=30).fit(ctx, target)
    x = ctx.heldout.images(range(len(ctx.heldout)))
    with torch.no_grad():
        v = split.activations(x)
        # by hand: input channels 0, 1 go to part 0 (their energy through filter 0 is larger), 2, 3 to part 1;
        # each virtual neuron keeps the PLANTED filter (sum of both) on its inputs
        summed = OVERLAP.sum(0)
        expected = torch.stack([torch.einsum("j,njhw->nhw", summed * torch.tensor([1.0, 1, 0, 0]), x),
                                torch.einsum("j,njhw->nhw", summed * torch.tensor([0.0, 0, 1, 1]), x)], 1)
    torch.testing.assert_close(v, expected, atol=1e-5, rtol=0)
    recovery = PlantedRecovery().score(split, ctx)["recovery"]
    assert 0.0 < recovery < 0.999


def test_gating_ceiling_routes_each_image_to_its_true_owner():
    ctx, target = _planted(DISJOINT, mixed=True)
    split = GatingCeiling(n_ref=30).fit(ctx, target)
    x = ctx.heldout.images(range(len(ctx.heldout)))
    with torch.no_grad():
        parts = ctx.planted[0].parts_fn(x)
        owner = parts.clamp(min=0).sum((2, 3)).argmax(1)
        orig = channel_activation(ctx.model, "conv", 0, x)
        expected = torch.stack([(owner == i).float()[:, None, None] * orig for i in range(2)], 1)
        torch.testing.assert_close(split.activations(x), expected, atol=1e-6, rtol=0)
    out = PlantedRecovery().score(split, ctx)
    assert out["ari"] == pytest.approx(1.0)
    # mixed images: a gate carries the other part's quarter-strength share along, so it cannot
    # reach the decomposition that surgery reaches here
    assert 0.5 < out["recovery"] < PlantedRecovery().score(SurgeryCeiling(n_ref=30).fit(ctx, target), ctx)["recovery"]


def test_copies_score_no_recovery_on_the_same_case():
    ctx, target = _planted(DISJOINT, mixed=True)
    out = PlantedRecovery().score(Duplicate(n_ref=30).fit(ctx, target), ctx)
    assert out["recovery"] == pytest.approx(0.0, abs=1e-6)
