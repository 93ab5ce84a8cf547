"""Tests of methods.pure (Dreyer et al. 2024) on a hand-built case with known circuits.

The layer is a bias-free 1x1 conv on the image: neuron 0 = x_0 + x_1 + 0.2 x_2, neuron 1 = 0
(never fires). Class 0 images light up input channel 0, class 1 images channel 1, class 2
images are dim distractors. For neuron 0 the attribution r_j = W[0,j] * sum_hw x_j max(a_0, 0)
is ~[1, 0, eps] for class 0 and ~[0, 1, eps] for class 1: two circuits by construction.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch
from sklearn.metrics import adjusted_rand_score
from torch import nn

from benchmark.core.types import Context, NotApplicable, Target
from benchmark.engine.capture import CaptureSpec, capture
from benchmark.engine.layers import channel_activation
from benchmark.storage.cache import Cache
from methods.pure import Pure
from tests.fakes import TensorImages, tiny_context

N_GROUP = 10


class TwoCircuits(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Conv2d(3, 2, 1, bias=False)
        with torch.no_grad():
            self.layer.weight.zero_()
            self.layer.weight[0, :, 0, 0] = torch.tensor([1.0, 1.0, 0.2])
        self.head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))

    def forward(self, x):
        return self.head(self.layer(x))


def make_images(seed: int) -> TensorImages:
    g = torch.Generator().manual_seed(seed)
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(N_GROUP, 4, 4, generator=g)  # noqa: E731
    zero = torch.zeros(N_GROUP, 4, 4)
    group_a = torch.stack([u(1, 2), zero, u(0, 0.5)], 1)
    group_b = torch.stack([zero, u(1, 2), u(0, 0.5)], 1)
    distractors = torch.stack([u(0, 0.1), u(0, 0.1), u(0, 0.1)], 1)
    images = torch.cat([group_a, group_b, distractors])
    order = torch.randperm(images.shape[0], generator=g)  # classes interleaved in the dataset
    labels = torch.arange(3).repeat_interleave(N_GROUP)
    return TensorImages(images[order], labels[order], 3)


def make_context(top_k: int = 30, cache=None) -> Context:
    model = TwoCircuits().eval()
    fit, heldout = make_images(0), make_images(1)
    stats = capture(model, fit, CaptureSpec("layer", top_k=top_k, tau=None), progress=False)
    return Context(model=model, model_name="two", layer="layer", fit=fit, heldout=heldout, stats=stats,
                   batch_size=8, cache=cache)


TARGET = Target("two", "layer", 0)
PURE = Pure(k=2, n_ref=2 * N_GROUP)


def literal_vectors(model: TwoCircuits, images: torch.Tensor) -> torch.Tensor:
    """r_j = W[0,j] * sum_hw x_j max(a_0, 0), L1-normalised, written plainly."""
    w = model.layer.weight[0, :, 0, 0].detach()
    a = torch.einsum("j,njhw->nhw", w, images).clamp(min=0)
    r = w * (images * a[:, None]).sum((2, 3))
    return r / (r.abs().sum(1, keepdim=True) + 1e-10)


def truth_of(ctx: Context, ids) -> list[int]:
    return [int(ctx.fit.labels[i]) for i in ids]


def test_recovers_the_two_circuits():
    ctx = make_context()
    split = PURE.fit(ctx, TARGET)
    assert split.k == 2 and split.method == "pure" and split.recomposition == "gating"
    ids = [i for group in split.reference_ids for i in group]
    labels = [g for g, group in enumerate(split.reference_ids) for _ in group]
    assert sorted(truth_of(ctx, ids)) == [0] * N_GROUP + [1] * N_GROUP  # references = the two groups
    assert adjusted_rand_score(truth_of(ctx, ids), labels) == 1.0
    torch.testing.assert_close(split.info["features"].double(),
                               literal_vectors(ctx.model, ctx.fit.images(ctx.stats.top_max_ids[0, :20])).double(),
                               atol=1e-6, rtol=0)


def test_k_none_picks_two_by_silhouette_and_other_backends_agree():
    ctx = make_context()
    auto = dataclasses.replace(PURE, k=None).fit(ctx, TARGET)
    assert auto.k == 2 and auto.info["k_selection"] == "silhouette"
    scores = auto.info["silhouette"]
    assert set(scores) == {2, 3, 4, 5} and max(scores, key=scores.get) == 2
    ig = dataclasses.replace(PURE, backend="integrated_gradients").fit(ctx, TARGET)  # linear span: same vectors
    assert ig.reference_ids == PURE.fit(ctx, TARGET).reference_ids


def test_references_recomputed_when_statistics_hold_fewer():
    few, many = make_context(top_k=5), make_context(top_k=30)
    assert few.stats.top_max_ids.shape[1] == 5
    assert PURE.fit(few, TARGET).reference_ids == PURE.fit(many, TARGET).reference_ids


def test_gates_are_hard_sum_to_one_and_reproduce_the_reference_clusters():
    ctx = make_context()
    split = PURE.fit(ctx, TARGET)
    for images in (ctx.heldout.images(range(len(ctx.heldout))),
                   ctx.fit.images([i for group in split.reference_ids for i in group])):
        with torch.no_grad():  # gates need gradients internally; they must work under no_grad
            acts = split.activations(images)
            orig = channel_activation(ctx.model, "layer", 0, images)
        torch.testing.assert_close(acts.sum(1), orig, atol=1e-6, rtol=0)
        active = (acts.abs().flatten(2).sum(-1) > 0)  # (N, k): which virtual neuron carries the image
        assert (active.sum(1) <= 1).all()  # hard gates: one circuit per image
    # references go to their own circuit (nearest centroid = k-means cluster)
    carried = active.float().argmax(1).tolist()
    assert carried == [g for g, group in enumerate(split.reference_ids) for _ in group]


def test_deterministic_for_a_seed():
    ctx = make_context()
    a, b = PURE.fit(ctx, TARGET), PURE.fit(ctx, TARGET)
    x = ctx.heldout.images(range(12))
    assert a.reference_ids == b.reference_ids
    assert torch.equal(a.activations(x), b.activations(x))
    torch.testing.assert_close(a.info["centroids"], b.info["centroids"], atol=0, rtol=0)


def test_cached_attributions_are_reused(tmp_path):
    cache = Cache(tmp_path)
    ctx = make_context(cache=cache)
    first = PURE.fit(ctx, TARGET)
    second = PURE.fit(ctx, TARGET)
    assert cache.misses == 1 and cache.hits == 1
    assert first.reference_ids == second.reference_ids
    assert torch.equal(first.info["features"], second.info["features"])


def test_polysemanticity_is_the_cosine_of_class_mean_attributions():
    ctx = make_context()
    score = PURE.polysemanticity(ctx, 0, (0,), (1,))
    means = []
    for cls in (0, 1):
        ids = ctx.fit.indices_of([cls])
        means.append(literal_vectors(ctx.model, ctx.fit.images(ids)).double().mean(0))
    expected = float(torch.nn.functional.cosine_similarity(means[0], means[1], dim=0))
    assert score == pytest.approx(expected, abs=1e-6)
    assert score < 0.1  # different circuits: polysemantic for this pair
    assert PURE.polysemanticity(ctx, 0, (0, 2), (0, 2)) == pytest.approx(1.0, abs=1e-9)
    subset = dataclasses.replace(PURE, n_concept=3)  # a seeded subset of 3 images per concept
    assert subset.polysemanticity(ctx, 0, (0,), (1,)) == subset.polysemanticity(ctx, 0, (0,), (1,))


def test_specific_errors():
    ctx = make_context()
    with pytest.raises(ValueError, match="k >= 2"):
        Pure(k=1)
    with pytest.raises(ValueError, match="k_range"):
        Pure(k=None, k_range=(1, 2))
    with pytest.raises(ValueError, match="n_ref=2 must exceed"):
        Pure(k=2, n_ref=2)
    with pytest.raises(ValueError, match="unknown attribution backend"):
        Pure(backend="saliency")
    with pytest.raises(ValueError, match="n_ref=1000 exceeds the 30 images"):
        Pure(n_ref=1000).fit(ctx, TARGET)
    with pytest.raises(NotApplicable, match="never activates"):
        PURE.fit(ctx, Target("two", "layer", 1))
    with pytest.raises(NotApplicable, match="zero attribution"):
        PURE.polysemanticity(ctx, 1, (0,), (1,))
    with pytest.raises(ValueError, match="differs from the context's layer"):
        PURE.fit(ctx, Target("two", "head", 0))
    with pytest.raises(IndexError, match="out of range"):
        PURE.fit(ctx, Target("two", "layer", 5))
    with pytest.raises(ValueError, match="class index 7 out of range"):
        PURE.polysemanticity(ctx, 0, (7,), (1,))


def test_lower_layer_by_name_equals_the_layer_input():
    ctx = tiny_context(top_k=12)
    target = Target("tiny", "conv2", 0)
    by_input = Pure(n_ref=12).fit(ctx, target)
    by_name = Pure(n_ref=12, lower_layer="act1").fit(ctx, target)  # act1's output is conv2's input
    assert by_input.reference_ids == by_name.reference_ids
    torch.testing.assert_close(by_input.info["features"], by_name.info["features"], atol=1e-6, rtol=0)


def test_prepare_computes_every_channel_once_with_the_same_vectors(tmp_path):
    """One shared pass over the union of the references of several channels (the layer
    track) gives each channel the vectors its own fit computes."""
    plain = tiny_context(top_k=12)  # TinyNet conv2: 6 channels over 48 images, batches of 8
    targets = [Target("tiny", "conv2", c) for c in range(plain.stats.num_channels)]
    pure = Pure(k=2, n_ref=12)
    cache = Cache(tmp_path)
    ctx = dataclasses.replace(plain, cache=cache)
    pure.prepare(ctx, targets)
    written = len(list((tmp_path / "pure_attributions").glob("*.safetensors")))
    assert written >= 2
    for target in targets:
        try:
            want = pure.fit(plain, target)
        except NotApplicable:
            continue
        got = pure.fit(ctx, target)
        torch.testing.assert_close(got.info["features"], want.info["features"], atol=1e-6, rtol=0)
        assert got.reference_ids == want.reference_ids
    assert cache.misses == 0 and cache.hits == written  # every fit read what prepare wrote


def test_prepare_detection_gives_the_same_cosines_from_shared_forwards(tmp_path):
    plain = tiny_context(top_k=12)
    pure = Pure(k=2, n_ref=12, n_concept=5)  # a seeded subset of each concept's 12 images
    targets = [Target("tiny", "conv2", c, ((0,), (b,))) for c in range(plain.stats.num_channels) for b in (1, 2)]
    cache = Cache(tmp_path)
    ctx = dataclasses.replace(plain, cache=cache)
    pure.prepare_detection(ctx, targets)
    assert len(list((tmp_path / "pure_attributions").glob("*.safetensors"))) == 6 * 3  # channels x concepts
    for t in targets:
        try:
            want = pure.polysemanticity(plain, t.channel, *t.concepts)
        except NotApplicable:
            continue
        assert pure.polysemanticity(ctx, t.channel, *t.concepts) == pytest.approx(want, abs=1e-6)
    assert cache.misses == 0 and cache.hits > 0
