"""ARVs, cosine rule and candidate pairs (benchmark.engine.relevance) against plainly written
reference computations of Hesse et al. (2025), steps 1-2."""
import math

import pytest
import torch
from torch import nn

from benchmark.engine.capture import CaptureSpec, capture
from benchmark.engine.layer_stats import LayerStats
from benchmark.engine.relevance import (
    PairRecord,
    arv,
    arv_by_gradient,
    arv_cosine,
    candidate_pairs,
    closed_form_exact,
    concept_arvs,
    detect_polysemantic_pairs,
)
from tests.fakes import StridedNet, TensorImages, TinyNet, literal_arv, random_images, unbalanced_images


def test_closed_form_arv_equals_literal_input_x_gradient_for_class_sets():
    model, data = TinyNet().eval(), unbalanced_images()
    stats = capture(model, data, CaptureSpec("conv2", top_k=3, tau=None), progress=False)
    for channel, classes in ((0, (0,)), (3, (1,)), (5, (0, 2, 3))):
        want = literal_arv(model, model.conv2, model.conv2, data, classes, channel)
        got = arv(model, "conv2", stats, channel, classes)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # a class set is the mean over ALL its images, not the mean of class means
    per_class = [arv(model, "conv2", stats, 5, (t,)) for t in (0, 2, 3)]
    assert not torch.allclose(arv(model, "conv2", stats, 5, (0, 2, 3)), torch.stack(per_class).mean(0))


def test_gradient_arv_of_strided_padded_conv_equals_literal_and_closed_form_refuses():
    model, data = StridedNet().eval(), unbalanced_images()
    got = arv_by_gradient(model, "conv2", "conv2", data, data.indices_of([1, 2]), [4, 0, 2], batch_size=3)
    for row, channel in enumerate((4, 0, 2)):
        want = literal_arv(model, model.conv2, model.conv2, data, (1, 2), channel)
        torch.testing.assert_close(got[row], want, atol=1e-5, rtol=1e-5)
    # the spatially summed input times the summed kernel is NOT the ARV of this conv
    stats = capture(model, data, CaptureSpec("conv2", top_k=3, tau=None), progress=False)
    naive = model.conv2.weight.detach()[4].sum((1, 2)).double() * stats.input_mean((1, 2))
    assert not torch.allclose(naive, got[0], atol=1e-3)
    assert not closed_form_exact(model.conv2)
    with pytest.raises(ValueError, match="1x1, stride-1"):
        arv(model, "conv2", stats, 4, (1,))
    arvs, path = concept_arvs(model, "conv2", data, 4, ((1, 2), (0,)), stats, batch_size=4)
    assert path == "gradient"
    torch.testing.assert_close(arvs[0], got[0])


def test_gradient_arv_through_a_nonlinear_block():
    model, data = StridedNet().eval(), unbalanced_images()
    block = model.block

    def span(x):  # input of "block" -> output of "block.conv_b", written out
        return block.conv_b(torch.relu(block.conv_a(x)))

    got = arv_by_gradient(model, "block", "block.conv_b", data, data.indices_of([0]), [1, 3], batch_size=4)
    for row, channel in enumerate((1, 3)):
        want = literal_arv(model, block, span, data, (0,), channel)
        torch.testing.assert_close(got[row], want, atol=1e-5, rtol=1e-5)


def test_closed_form_and_gradient_path_agree_on_a_linear_1x1_conv():
    model, data = TinyNet().eval(), unbalanced_images()
    stats = capture(model, data, CaptureSpec("conv2", top_k=3, tau=None), progress=False)
    closed, path = concept_arvs(model, "conv2", data, 2, ((0,), (1, 3)), stats)
    assert path == "closed_form"
    grad, path = concept_arvs(model, "conv2", data, 2, ((0,), (1, 3)), None)
    assert path == "gradient"
    torch.testing.assert_close(closed, grad, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="concept 1 .* no images"):
        concept_arvs(model, "conv2", TensorImages(data.data[:7], data.labels[:7], 4), 2, ((0,), (1,)), None)


def test_closed_form_exactness_rule():
    assert closed_form_exact(nn.Conv2d(4, 3, 1, bias=True))
    assert closed_form_exact(nn.Conv2d(4, 3, 1, padding=1))  # zero padding adds bias-only pixels
    assert not closed_form_exact(nn.Conv2d(4, 3, 1, padding=1, padding_mode="reflect"))
    assert not closed_form_exact(nn.Conv2d(4, 3, 1, stride=2))
    assert not closed_form_exact(nn.Conv2d(4, 4, 1, groups=2))
    assert not closed_form_exact(nn.Linear(4, 3))


def test_arv_cosine_known_answers():
    assert arv_cosine(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])) == pytest.approx(1 / math.sqrt(2))
    assert arv_cosine(torch.tensor([1.0, -2.0]), torch.tensor([-2.0, 4.0])) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="all-zero"):
        arv_cosine(torch.zeros(3), torch.ones(3))
    with pytest.raises(ValueError, match="length"):
        arv_cosine(torch.ones(3), torch.ones(4))


def hand_stats(counts, importance) -> LayerStats:
    counts = torch.tensor(counts)
    importance = torch.tensor(importance)
    T, C = importance.shape
    z = torch.zeros(C, 1, dtype=torch.long)
    return LayerStats(counts, torch.zeros(T, 2, dtype=torch.float64), torch.zeros(T, C, dtype=torch.float64),
                      z, z.float(), z, z.float(), importance_counts=importance,
                      attribution_sum=torch.zeros(T, C, dtype=torch.float64), tau=0.03)


def test_candidate_pairs_on_hand_built_stats():
    # 4 classes x 3 channels; p = 0.75 of the class's images
    stats = hand_stats([8, 4, 10, 0], [[6, 8, 1],   # class 0: channel 0 (6 >= 6), channel 1
                                       [3, 4, 4],   # class 1: channels 0 (3 >= 3), 1, 2
                                       [7, 8, 9],   # class 2: channels 1 (8 >= 7.5), 2
                                       [0, 0, 0]])  # class 3 has no images: never relevant
    assert candidate_pairs(stats, 0.75) == [(0, 0, 1), (1, 0, 1), (1, 0, 2), (1, 1, 2), (2, 1, 2)]
    assert candidate_pairs(stats, 1.0) == [(1, 0, 1)]
    with pytest.raises(ValueError, match="p must be"):
        candidate_pairs(stats, 0.0)


def test_detection_records_follow_the_gamma_rule():
    model, data = TinyNet().eval(), random_images(n=24, num_classes=3, size=10)
    stats = capture(model, data, CaptureSpec("conv2", top_k=3, tau=0.05), progress=False)
    records = detect_polysemantic_pairs(model, "conv2", stats, p=0.3, gamma=0.99)
    assert [(r.channel, r.class_a, r.class_b) for r in records] == candidate_pairs(stats, 0.3)
    assert records, "fixture should produce candidates"
    for r in records:
        want = arv_cosine(arv(model, "conv2", stats, r.channel, (r.class_a,)),
                          arv(model, "conv2", stats, r.channel, (r.class_b,)))
        assert isinstance(r, PairRecord) and r.cosine == pytest.approx(want)
        assert r.polysemantic == (r.cosine < 0.99)


def test_detection_by_gradient_needs_the_dataset_and_matches_literal():
    model, data = StridedNet().eval(), random_images(n=12, num_classes=3, size=10)
    stats = capture(model, data, CaptureSpec("conv2", top_k=3, tau=0.05), progress=False)
    with pytest.raises(ValueError, match="pass the dataset"):
        detect_polysemantic_pairs(model, "conv2", stats, p=0.3)
    records = detect_polysemantic_pairs(model, "conv2", stats, p=0.3, dataset=data, batch_size=5)
    assert records
    r = records[0]
    want = arv_cosine(literal_arv(model, model.conv2, model.conv2, data, (r.class_a,), r.channel),
                      literal_arv(model, model.conv2, model.conv2, data, (r.class_b,), r.channel))
    assert r.cosine == pytest.approx(want, abs=1e-6)


def test_arv_by_gradient_bad_input():
    model, data = TinyNet().eval(), random_images(n=8, size=8)
    with pytest.raises(ValueError, match="at least one image"):
        arv_by_gradient(model, "conv2", "conv2", data, [], [0])
    with pytest.raises(IndexError, match="6 channels"):
        arv_by_gradient(model, "conv2", "conv2", data, [0], [6])
    with pytest.raises(RuntimeError, match="no forward path"):
        arv_by_gradient(model, "conv2", "conv1", data, [0], [0])
