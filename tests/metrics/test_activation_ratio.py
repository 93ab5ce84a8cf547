"""activation_ratio: known answers on hand-built splits over TinyNet, and the attribution
filter against a plainly written per-image reference."""
from __future__ import annotations

import dataclasses
import functools

import pytest
import torch

from benchmark.core.types import NotApplicable, Split, Target
from benchmark.engine.layers import capture_layer, channel_activation
from metrics._common import original_with_attribution
from metrics.activation_ratio import ActivationRatio
from tests.fakes import tiny_context

CHANNEL = 1  # in tiny_context() this channel passes the tau filter on every class
CONCEPTS = ((0,), (1, 3))


@functools.lru_cache(maxsize=1)
def ctx():
    return tiny_context()


def label_lookup(context):
    """image -> label through the first pixel (the random images are distinct there)."""
    table = {}
    for data in (context.fit, context.heldout):
        for image, label in (data[i] for i in range(len(data))):
            table[float(image[0, 0, 0])] = label
    return lambda images: torch.tensor([table[float(x[0, 0, 0])] for x in images])


def gated(context, weights_by_class, concepts=CONCEPTS, split_concepts=None, residual=None):
    """Split with virtual neuron j = weights_by_class[label][j] * orig (orig of the real model)."""
    labels_of = label_lookup(context)
    w = torch.tensor(weights_by_class, dtype=torch.float32)  # (num_classes, k)

    def virtual(images):
        orig = channel_activation(context.model, "conv2", CHANNEL, images)
        return w[labels_of(images)][:, :, None, None] * orig[:, None]

    residual_fn = None
    if residual is not None:
        residual_fn = lambda images: residual * channel_activation(context.model, "conv2", CHANNEL, images)  # noqa: E731
    return Split(Target("tiny", "conv2", CHANNEL, concepts), "hand", w.shape[1],
                 "surgery" if residual is not None else "gating", virtual, residual_fn=residual_fn,
                 concepts=split_concepts)


def metric(**kw):
    return ActivationRatio(**kw)


def test_perfect_split_has_own_one_and_cross_zero():
    # virtual neuron i = orig on concept-i images, 0 elsewhere (classes 0 | 1, 3)
    split = gated(ctx(), [[1, 0], [0, 1], [0.5, 0.5], [0, 1]], split_concepts=CONCEPTS)
    out = metric().score(split, ctx())
    assert out["own_gating"] == pytest.approx(1.0, abs=1e-9)
    assert out["cross_gating"] == pytest.approx(0.0, abs=1e-9)
    assert out["distance"] == pytest.approx(0.0, abs=1e-9)
    assert out["distance_pooled"] == pytest.approx(0.0, abs=1e-9)
    assert "own_surgery" not in out
    assert out["kept_c0"] == 6 and out["kept_c1"] == 12 and out["images_c1"] == 12


def test_hand_ratios_and_matching_without_split_concepts():
    weights = [[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.2, 0.8]]
    named = metric().score(gated(ctx(), weights, split_concepts=CONCEPTS), ctx())
    assert named["own_gating"] == pytest.approx((0.9 + 0.8) / 2)
    assert named["cross_gating"] == pytest.approx((0.1 + 0.2) / 2)
    assert named["ratio_v1_c0"] == pytest.approx(0.1)
    # distance per concept: |0.9 - 1| + 0.1 = 0.2 and |0.8 - 1| + 0.2 = 0.4; kept 6 and 12 images
    assert named["distance"] == pytest.approx(0.3)
    assert named["distance_pooled"] == pytest.approx((6 * 0.2 + 12 * 0.4) / 18)
    # neurons in the other order and only the target's concepts: the matching finds them
    swapped = metric().score(gated(ctx(), [row[::-1] for row in weights]), ctx())
    assert swapped["distance"] == pytest.approx(named["distance"])
    assert (swapped["matched_c0"], swapped["matched_c1"]) == (1.0, 0.0)
    # with the neurons named in the wrong order the metric believes the names
    wrong = metric().score(gated(ctx(), [row[::-1] for row in weights], split_concepts=CONCEPTS), ctx())
    assert wrong["own_gating"] == pytest.approx((0.1 + 0.2) / 2)


def test_surgery_residual_ratio_and_no_split_baseline():
    # d1 + d2 - res = orig with res = 0.1 orig
    out = metric().score(gated(ctx(), [[1.05, 0.05], [0.05, 1.05], [0.55, 0.55], [0.05, 1.05]],
                               split_concepts=CONCEPTS, residual=0.1), ctx())
    assert out["residual_c0"] == pytest.approx(0.1) and out["residual_c1"] == pytest.approx(0.1)
    assert out["own_surgery"] == pytest.approx(1.05) and out["cross_surgery"] == pytest.approx(0.05)
    assert "own_gating" not in out
    assert out["distance"] == pytest.approx(0.1)
    # k = 1, the channel itself: one concept own 1 (distance 0), the other unmatched with
    # cross 1 (distance 2): distance 1, the same as two copies of orig / 2
    single = metric().score(gated(ctx(), [[1.0]] * 4), ctx())
    assert single["distance"] == pytest.approx(1.0)
    assert single["matched_c1"] == -1.0 or single["matched_c0"] == -1.0
    copies = metric().score(gated(ctx(), [[0.5, 0.5]] * 4), ctx())
    assert copies["distance"] == pytest.approx(1.0) and copies["distance_pooled"] == pytest.approx(1.0)


def reference_share(model, image, label, channel):
    """Relative positive attribution of one image, written out plainly."""
    with capture_layer(model, "conv2", retain_grad=True) as tap:
        logits = model(image[None].requires_grad_(True))
        logits[0, label].backward()
    contribution = (tap.output * tap.output.grad).detach()[0].clamp(min=0).sum(dim=(1, 2))
    model.zero_grad(set_to_none=True)
    return float(contribution[channel] / contribution.sum())


def test_attribution_filter_matches_plain_reference():
    c = ctx()
    images = c.heldout.images(range(8))
    labels = c.heldout.labels[:8]
    for channel in (0, 1, 2, 5):
        orig, share = original_with_attribution(c.model, "conv2", channel, images, labels)
        want = [reference_share(c.model, images[i], int(labels[i]), channel) for i in range(8)]
        torch.testing.assert_close(share, torch.tensor(want), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(orig, channel_activation(c.model, "conv2", channel, images))
    # the filter changes what is kept: a high tau keeps fewer images than the default
    split = gated(c, [[1, 0], [0, 1], [0.5, 0.5], [0, 1]], split_concepts=CONCEPTS)
    shares = original_with_attribution(c.model, "conv2", CHANNEL, c.heldout.images(range(24)), c.heldout.labels)[1]
    tau = float(shares[c.heldout.labels == 0].median())
    out = metric(tau=tau).score(split, c)
    assert out["kept_c0"] == int((shares[c.heldout.labels == 0] >= tau).sum()) < 6


def test_default_threshold_is_the_layers_capture_tau():
    # tau=None reads the capture tau of the statistics (calibrated on the fit split where the
    # config calibrates it): statistics with the median share as tau keep what tau=median keeps
    c = ctx()
    assert metric().threshold(c) == (0.03 if c.stats.tau is None else c.stats.tau)
    shares = original_with_attribution(c.model, "conv2", CHANNEL, c.heldout.images(range(24)), c.heldout.labels)[1]
    tau = float(shares[c.heldout.labels == 0].median())
    calibrated = dataclasses.replace(c, stats=dataclasses.replace(c.stats, tau=tau))
    split = gated(c, [[1, 0], [0, 1], [0.5, 0.5], [0, 1]], split_concepts=CONCEPTS)
    assert metric().threshold(calibrated) == tau
    assert metric().score(split, calibrated) == metric(tau=tau).score(split, c)
    assert metric().score(split, calibrated)["kept_c0"] < metric().score(split, c)["kept_c0"]
    assert metric(tau=0.0).threshold(calibrated) == 0.0  # the parameter wins


def test_a_concept_without_kept_images_still_reports_the_other():
    # as the authors' get_results.py: concept 1 keeps no image (its classes are absent from
    # this held-out subset), concept 0 is still scored
    from benchmark.sources.datasets import Subset

    c = ctx()
    keep = [i for i in range(len(c.heldout)) if int(c.heldout.labels[i]) not in (1, 3)]
    sub = dataclasses.replace(c, heldout=Subset(c.heldout, keep))
    split = gated(c, [[0.9, 0.1], [0, 1], [0.5, 0.5], [0, 1]], split_concepts=CONCEPTS)
    out = metric().score(split, sub)
    assert out["kept_c1"] == 0 and out["kept_c0"] == 6 and out["concepts_scored"] == 1.0
    assert out["distance"] == pytest.approx(0.2) and out["distance_pooled"] == pytest.approx(0.2)
    assert "own_c1" not in out


def test_batching_does_not_change_the_result():
    split = gated(ctx(), [[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.3, 0.7]])
    a = metric().score(split, ctx())
    b = metric().score(split, dataclasses.replace(ctx(), batch_size=5))
    assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k]) for k in a)


def test_not_applicable_cases_and_bad_input():
    c = ctx()
    no_concepts = gated(c, [[1, 0]] * 4, concepts=None)
    with pytest.raises(NotApplicable, match="needs concepts"):
        metric().score(no_concepts, c)
    with pytest.raises(NotApplicable, match="no held-out image of any concept"):
        metric(eps=1e9).score(gated(c, [[1, 0], [0, 1], [0, 1], [0, 1]]), c)
    with pytest.raises(ValueError, match="tau"):
        metric(tau=1.5)
    all_values = metric().score(gated(c, [[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.3, 0.7]]), c)
    assert all(isinstance(v, float) and v == v for v in all_values.values())


def test_cross_is_a_magnitude_and_a_negative_leak_is_not_a_better_score():
    # surgery split leaking -0.3 of the channel to the other neuron on every concept: the
    # headline cross is |-0.3| (as bad as +0.3), the signed mean stays available
    negative = metric().score(gated(ctx(), [[1.3, -0.3], [-0.3, 1.3], [0.5, 0.5], [-0.3, 1.3]],
                                    split_concepts=CONCEPTS, residual=0.0), ctx())
    positive = metric().score(gated(ctx(), [[0.7, 0.3], [0.3, 0.7], [0.5, 0.5], [0.3, 0.7]],
                                    split_concepts=CONCEPTS, residual=0.0), ctx())
    assert negative["cross_surgery"] == pytest.approx(0.3)
    assert negative["cross_surgery_signed"] == pytest.approx(-0.3)
    assert positive["cross_surgery"] == pytest.approx(0.3) == positive["cross_surgery_signed"]
    # mixed signs over the two concepts do not cancel: |+0.2| and |-0.2| average to 0.2
    mixed = metric().score(gated(ctx(), [[0.8, 0.2], [-0.2, 1.2], [0.5, 0.5], [-0.2, 1.2]],
                                 split_concepts=CONCEPTS, residual=0.0), ctx())
    assert mixed["cross_surgery"] == pytest.approx(0.2) and mixed["cross_surgery_signed"] == pytest.approx(0.0, abs=1e-6)
