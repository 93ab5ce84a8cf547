"""residual_energy and output_fidelity: hand-made residuals and model copies of known size."""
from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch

from benchmark.core.types import NotApplicable, Split, Target
from benchmark.engine.layers import channel_activation
from metrics.output_fidelity import OutputFidelity
from metrics.residual_energy import ResidualEnergy
from tests.fakes import tiny_context

CHANNEL = 4


@functools.lru_cache(maxsize=1)
def ctx():
    return tiny_context()


def orig(images):
    return channel_activation(ctx().model, "conv2", CHANNEL, images)


def surgery(residual_fn, concepts=None, model=None):
    return Split(Target("tiny", "conv2", CHANNEL, concepts), "hand", 2, "surgery",
                 lambda x: torch.stack([orig(x), orig(x)], 1), residual_fn=residual_fn, model=model)


def test_residual_proportional_to_the_channel():
    out = ResidualEnergy().score(surgery(lambda x: 0.2 * orig(x)), ctx())
    assert out["residual_ratio"] == pytest.approx(0.2)
    assert out["residual_median"] == pytest.approx(0.2)
    assert out["energy"] == pytest.approx(0.04)
    assert out["images"] == len(ctx().heldout)


def test_constant_residual_on_concept_images_against_plain_formula():
    concepts = ((0,), (2,))
    out = ResidualEnergy().score(surgery(lambda x: torch.ones_like(orig(x)), concepts), ctx())
    idx = [i for i in range(len(ctx().heldout)) if int(ctx().heldout.labels[i]) in (0, 2)]
    with torch.no_grad():
        o = orig(ctx().heldout.images(idx)).double()
    hw = o.shape[1] * o.shape[2]
    sums = o.sum(dim=(1, 2)).abs()
    assert out["images"] == len(idx) == 12
    assert out["residual_ratio"] == pytest.approx(len(idx) * hw / float(sums.sum()))  # ratio of sums
    assert out["residual_median"] == pytest.approx(float(np.median((hw / sums).numpy())))
    assert out["residual_mean_ratio"] == pytest.approx(float((hw / sums).mean()))
    assert out["energy"] == pytest.approx(len(idx) * hw / float((o ** 2).sum()))


def test_residual_not_applicable_without_residual():
    gating = Split(Target("tiny", "conv2", CHANNEL), "hand", 1, "gating", lambda x: orig(x)[:, None])
    with pytest.raises(NotApplicable, match="no residual"):
        ResidualEnergy().score(gating, ctx())
    with pytest.raises(NotApplicable, match="near\\) zero"):
        ResidualEnergy(eps=1e12).score(surgery(lambda x: orig(x)), ctx())


def test_identical_copy_is_exact():
    copy_model = copy.deepcopy(ctx().model)
    out = OutputFidelity().score(surgery(lambda x: 0 * orig(x), model=copy_model), ctx())
    assert out["max_abs_logit_diff"] == 0.0 and out["top1_agreement"] == 1.0
    assert out["images"] == len(ctx().heldout)


def test_perturbed_copy_gives_the_hand_numbers():
    with torch.no_grad():
        f = ctx().model(ctx().heldout.images(range(len(ctx().heldout))))
    # lowering logit 0 by the median margin to the best other class flips about half of the
    # images predicted 0 (and no other); delta < 0
    margin = f[:, 0] - f[:, 1:].max(1).values
    m = margin[margin > 0].sort().values
    delta = -float(m[len(m) // 2 - 1] + m[len(m) // 2]) / 2  # midway between two margins: no ties
    perturbed = copy.deepcopy(ctx().model)
    with torch.no_grad():
        perturbed.fc.bias[0] += delta
    out = OutputFidelity().score(surgery(lambda x: 0 * orig(x), model=perturbed), ctx())
    g = f.clone()
    g[:, 0] += delta
    agreement = float((f.argmax(1) == g.argmax(1)).float().mean())
    assert out["max_abs_logit_diff"] == pytest.approx(abs(delta), abs=1e-5)
    assert out["mean_abs_logit_diff"] == pytest.approx(abs(delta) / f.shape[1], abs=1e-5)
    assert out["top1_agreement"] == pytest.approx(agreement)
    assert 0.0 < agreement < 1.0  # some predictions flip, some do not


def test_fidelity_not_applicable_without_rewritten_model():
    with pytest.raises(NotApplicable, match="does not rewrite"):
        OutputFidelity().score(surgery(lambda x: orig(x)), ctx())
