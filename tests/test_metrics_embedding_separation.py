"""embedding_separation: the distance core by hand, and the metric's wiring (reference ids,
receptive-field crops of each virtual neuron, [0, 1] conversion, feature visualisations)
with a transparent fake embedder."""
from __future__ import annotations

import functools

import pytest
import torch

import metrics.embedding_separation as es
from benchmark.crops import receptive_field_crops
from benchmark.layers import channel_activation
from benchmark.types import NotApplicable, Split, Target
from metrics.embedding_separation import EmbeddingSeparation, separation
from tests.fakes import tiny_context


def test_separation_by_hand():
    # 1-D points: group 0 = {0, 1}, group 1 = {10, 12}; ordered pairs a != b
    x = torch.tensor([[0.0], [1.0], [10.0], [12.0]])
    inter, intra, overall = separation(x, [0, 0, 1, 1])
    assert intra == pytest.approx((1 + 1 + 2 + 2) / 4)
    assert inter == pytest.approx(2 * (10 + 12 + 9 + 11) / 8)
    assert overall == pytest.approx((2 * (1 + 2) + 2 * (10 + 12 + 9 + 11)) / 12)
    assert inter - intra == pytest.approx(9.0)
    # 2-D, three groups: Euclidean, not squared
    y = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0], [3.0, 4.0], [0.0, 0.0], [3.0, 4.0]])
    inter, intra, overall = separation(y, [0, 0, 1, 1, 2, 2])
    assert intra == pytest.approx(5.0) and inter == pytest.approx(2.5) and overall == pytest.approx(3.0)


def test_identical_groups_give_no_separation():
    same = torch.ones(6, 4)
    assert separation(same, [0, 0, 0, 1, 1, 1]) == (0.0, 0.0, 0.0)
    # both groups drawn from one distribution: separation ~0 relative to the distances
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 8, generator=g)
    inter, intra, overall = separation(x, torch.arange(400) % 2)
    assert abs(inter - intra) < 0.02 * overall


def test_separation_rejects_degenerate_groups():
    with pytest.raises(ValueError, match="group sizes \\[3\\]"):
        separation(torch.randn(3, 2), [0, 0, 0])
    with pytest.raises(ValueError, match="group sizes \\[2, 1\\]"):
        separation(torch.randn(3, 2), [0, 0, 1])
    with pytest.raises(ValueError, match="one group per row"):
        separation(torch.randn(3, 2), [0, 1])


@functools.lru_cache(maxsize=1)
def ctx():
    return tiny_context()


def two_channel_split(refs=((0, 1, 2, 3, 4), (5, 6, 7, 8, 9)), k=2):
    """Virtual neuron 0 = channel 4, virtual neuron 1 = channel 1 (different crops)."""
    channels = (4, 1)[:k]

    def virtual(images):
        return torch.stack([channel_activation(ctx().model, "conv2", c, images) for c in channels], 1)

    return Split(Target("tiny", "conv2", 4), "hand", k, "gating", virtual, reference_ids=refs[:k])


class FlatEmbedder:
    """Embeds an image as its flattened pixels; records what it was given."""

    name = "flat"

    def __init__(self):
        self.seen = []

    def embed(self, images):
        self.seen.append(images)
        return images.flatten(1)


@pytest.fixture
def flat(monkeypatch):
    embedder = FlatEmbedder()
    monkeypatch.setattr(es, "_build_embedder", lambda name, args: embedder)
    return embedder


def test_crops_metric_equals_manual_pipeline(flat):
    split = two_channel_split()
    metric = EmbeddingSeparation(embedder="flat", max_refs_per_neuron=4, crop_size=8)
    out = metric.score(split, ctx())
    fit = ctx().fit
    parts, groups = [], []
    for i, ids in enumerate(split.reference_ids):
        fn = lambda x, i=i: split.activations(x)[:, i]  # noqa: E731
        crops = receptive_field_crops(ctx().model, "conv2", fn, fit.images(list(ids[:4])), 8, 0.02)
        parts.append(fit.to_unit_range(crops))
        groups += [i] * 4
    inter, intra, overall = separation(torch.cat(parts).flatten(1), groups)
    assert out["separation"] == pytest.approx(inter - intra)
    assert out["baseline"] == pytest.approx(overall)
    assert (out["inter"], out["intra"]) == pytest.approx((inter, intra))
    assert out["images_v0"] == out["images_v1"] == 4
    seen = torch.cat(flat.seen)
    assert seen.shape == (8, 3, 8, 8) and seen.min() >= 0 and seen.max() <= 1
    assert metric.label == "embedding_separation[flat,crops]"


def test_fvis_source_renders_per_neuron(flat):
    metric = EmbeddingSeparation(embedder="flat", source="fvis", fvis_per_neuron=3,
                                 fvis_args=(("steps", 2), ("image_size", 16)))
    out = metric.score(two_channel_split(), ctx())
    seen = torch.cat(flat.seen)
    assert seen.shape == (6, 3, 16, 16) and seen.min() >= 0 and seen.max() <= 1
    assert out["images_v0"] == out["images_v1"] == 3
    inter, intra, overall = separation(seen.flatten(1), [0, 0, 0, 1, 1, 1])
    assert out["separation"] == pytest.approx(inter - intra)
    assert metric.label == "embedding_separation[flat,fvis]"


def test_not_applicable_and_config_errors(flat):
    metric = EmbeddingSeparation(embedder="flat", crop_size=8)
    with pytest.raises(NotApplicable, match="k=1"):
        metric.score(two_channel_split(k=1), ctx())
    with pytest.raises(NotApplicable, match=r"\[3, 1\]"):
        metric.score(two_channel_split(refs=((0, 1, 2), (3,))), ctx())
    with pytest.raises(NotApplicable, match="no reference samples"):
        metric.score(two_channel_split(refs=()), ctx())
    with pytest.raises(ValueError, match="source"):
        EmbeddingSeparation(source="pixels")
    with pytest.raises(ValueError, match="pairs"):
        EmbeddingSeparation(embedder_args=("arch",))
    frozen = EmbeddingSeparation(embedder_args=[["arch", "ViT-B-32"]])
    assert frozen.embedder_args == (("arch", "ViT-B-32"),) and hash(frozen)
