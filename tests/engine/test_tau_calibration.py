"""Calibration of the ARV candidate rule (benchmark.engine.tau_calibration): hand-computed
shares, the count the calibrated tau gives back, p from importance counts, and the capture's
importance test agreeing with the calibrated tau on the same images."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmark.engine.capture import CaptureSpec, capture
from benchmark.engine.layer_stats import LayerStats
from benchmark.engine.tau_calibration import calibrate_p, calibrate_tau, relative_attributions, tau_for


def test_tau_for_a_hand_computed_table():
    shares = torch.tensor([[0.5, 0.3, 0.2, 0.0], [0.6, 0.25, 0.1, 0.05]], dtype=torch.float64)
    # sorted shares: .6 .5 .3 .25 .2 .1 .05 0
    assert tau_for(shares, 1) == 0.5  # 2nd largest: one important channel in each image
    assert tau_for(shares, 2) == 0.25  # 4th largest: two in each image
    counts = (shares >= tau_for(shares, 2)).sum(1).double().mean()
    assert counts == 2.0


def test_tau_for_leaves_out_images_without_positive_attribution_and_checks_its_range():
    shares = torch.tensor([[0.7, 0.3], [float("nan"), float("nan")]], dtype=torch.float64)
    assert tau_for(shares, 1) == 0.7
    with pytest.raises(ValueError, match="important_per_image must be in"):
        tau_for(shares, 3)
    with pytest.raises(ValueError, match="none of the 2 calibration images"):
        tau_for(torch.full((2, 2), float("nan")), 1)


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


class _Data:
    def __init__(self, n=40):
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, 3, 8, 8, generator=g)
        self.labels = torch.arange(n) % 3
        self.num_classes = 3

    def __len__(self):
        return len(self.x)

    def images(self, ids):
        return self.x[torch.as_tensor(list(ids) if not torch.is_tensor(ids) else ids)]

    def __getitem__(self, i):
        return self.x[i], int(self.labels[i])


def test_relative_attributions_match_input_times_gradient_by_hand():
    model, data = _Tiny(), _Data(6)
    x, y = data.x, data.labels
    z = model.conv(x).detach().requires_grad_(True)
    logits = model.head(torch.relu(z).mean((2, 3)))
    (g,) = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), z)
    a = (z * g).detach().double().flatten(2).sum(-1)
    expected = a / a.clamp(min=0).sum(1, keepdim=True)
    assert torch.allclose(relative_attributions(model, "conv", x, y), expected, atol=1e-10)
    assert all(p.grad is None for p in model.parameters())


def test_the_calibrated_tau_gives_the_requested_count_in_the_capture():
    model, data = _Tiny(), _Data(40)
    figures = calibrate_tau(model, "conv", data, important_per_image=2, images=40, batch_size=16)
    stats = capture(model, data, CaptureSpec("conv", top_k=4, tau=figures["tau"], batch_size=16), progress=False)
    mean_count = float(stats.importance_counts.sum() / stats.class_counts.sum())
    assert mean_count == pytest.approx(2.0, abs=0.05)  # float32 capture vs float64 calibration: ties only
    assert figures["images"] == 40


def _stats(importance, counts):
    importance = torch.tensor(importance)
    T, C = importance.shape
    z = torch.zeros
    return LayerStats(class_counts=torch.tensor(counts), input_sum=z(T, 1, dtype=torch.float64),
                      output_sum=z(T, C, dtype=torch.float64), top_max_ids=z(C, 1, dtype=torch.long),
                      top_max_values=z(C, 1), top_mean_ids=z(C, 1, dtype=torch.long), top_mean_values=z(C, 1),
                      importance_counts=importance, attribution_sum=z(T, C, dtype=torch.float64),
                      tau=0.1)


def test_calibrate_p_from_hand_computed_shares():
    # shares: class 0 [0.5, 0.25, 0], class 1 [0.75, 0.5, 0.25]; class 2 absent (left out)
    stats = _stats([[2, 1, 0], [3, 2, 1], [0, 0, 0]], [4, 4, 0])
    assert calibrate_p(stats, 1) == 0.5  # 2nd largest of .75,.5,.5,.25,.25 -> relevant 1 + 2 (tie) per class
    assert calibrate_p(stats, 0.5) == 0.75
    rel = stats.relevant_classes(calibrate_p(stats, 2))  # 4th largest = 0.25
    assert rel[:2].sum(1).tolist() == [2, 3]
    with pytest.raises(ValueError, match="relevant_per_class must be in"):
        calibrate_p(stats, 4)
