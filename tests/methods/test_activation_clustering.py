"""Known-answer tests of activation clustering (O'Mahony et al. 2023) and activation k-means
(PURE's baseline) on hand-built pooled activation vectors and a model whose pooled layer
output is the image's channel means."""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.core.types import Context, NotApplicable, Target
from benchmark.engine.capture import CaptureSpec, capture
from methods.activation_clustering import (
    ActivationClustering,
    Standardiser,
    concept_clusters,
    standardised_ward_threshold,
    ward_num_clusters,
)
from methods.activation_kmeans import ActivationKMeans, kmeans_groups
from tests.fakes import TensorImages

RAW = dict(threshold=15.0, outlier_distance=15.0, min_cluster_size=5, seed=0)


def blobs(centres, sizes, noise=0.05, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([np.asarray(c, float) + noise * rng.standard_normal((n, len(c)))
                           for c, n in zip(centres, sizes)])


def test_ward_threshold_is_a_distance_merges_below_it():
    # two points: the Ward merge distance is their Euclidean distance
    assert ward_num_clusters(np.array([[0.0, 0.0], [14.9, 0.0]]), 15.0) == 1
    assert ward_num_clusters(np.array([[0.0, 0.0], [15.1, 0.0]]), 15.0) == 2
    # clusters of 20 and 20 with centres d apart merge at sqrt(2*20*20/40) * d = sqrt(20) * d
    x = blobs([[0, 0], [3.0, 0]], [20, 20], noise=0.0)
    assert ward_num_clusters(x, np.sqrt(20) * 3.0 - 0.01) == 2
    assert ward_num_clusters(x, np.sqrt(20) * 3.0 + 0.01) == 1


def test_two_clear_clusters_found_with_their_members():
    x = blobs([[5, 0, 0, 0], [0, 5, 0, 0]], [20, 12])
    out = concept_clusters(x, **RAW)
    assert out.k_ward == 2 and out.k_kmeans == 2
    assert out.members == (tuple(range(20)), tuple(range(20, 32)))  # bigger cluster first
    assert out.outliers == () and out.dropped == ()
    torch.testing.assert_close(out.centroids, torch.from_numpy(np.stack([x[:20].mean(0), x[20:].mean(0)])))


def test_outlier_removed_by_squared_distance():
    # row 40 joins cluster A (20 points at (5,0,0,0)) but lies 4.2 away: the k-means centroid
    # moves 4.2/21 towards it, so its squared distance is (4.2 * 20/21)^2 = 16.0 >= 15
    x = np.concatenate([blobs([[5, 0, 0, 0], [0, 5, 0, 0]], [20, 20], noise=0.0),
                        np.array([[5.0, 0, 4.2, 0]])])
    out = concept_clusters(x, **RAW)
    assert out.k_ward == 2 and out.outliers == (40,)
    assert 40 not in sum(out.members, ()) and len(sum(out.members, ())) == 40
    kept = concept_clusters(x, **{**RAW, "outlier_distance": 16.5})
    assert kept.outliers == () and 40 in sum(kept.members, ())


def test_small_cluster_dropped_and_k_max_caps():
    # a third cluster of 3 at Ward distance sqrt(2*3*20/23) * 5*sqrt(2) = 16.1 >= 15: found, then dropped
    x = blobs([[5, 0, 0, 0], [0, 5, 0, 0], [0, 0, 5, 0]], [20, 20, 3])
    out = concept_clusters(x, **RAW)
    assert out.k_ward == 3 and out.dropped == (3,)
    assert len(out.members) == 2 and set(sum(out.members, ())) == set(range(40))
    capped = concept_clusters(x, **RAW, k_max=1)
    assert capped.k_ward == 3 and capped.k_kmeans == 1


def test_standardiser_known_answer_and_scale_invariance():
    a = torch.tensor([[1.0, 10.0, 7.0], [3.0, 30.0, 7.0], [5.0, 20.0, 7.0]], dtype=torch.float64)
    f = Standardiser.fit(a)(a)
    mean, std = a.mean(0), a.std(0, unbiased=False)
    expected = (a - mean) / (std * np.sqrt(2))  # D_eff = 2: the constant third dimension is ignored
    expected[:, 2] = 0.0
    torch.testing.assert_close(f, expected)
    # the standardised mode is invariant to per-dimension affine rescaling of the layer
    x = torch.from_numpy(blobs([[5, 0, 0, 0], [0, 5, 0, 0]], [20, 20], noise=0.5))
    scaled = x * torch.tensor([1000.0, 0.01, 3.0, 1.0]) + 7.0
    # measured over seeds 0-4: top Ward merge ~6.3 (between), next ~3.2 at most (within)
    kw = dict(threshold=4.5, outlier_distance=6.0, min_cluster_size=5)
    one = concept_clusters(Standardiser.fit(x)(x), **kw)
    two = concept_clusters(Standardiser.fit(scaled)(scaled), **kw)
    assert one.members == two.members and len(one.members) == 2
    assert concept_clusters(scaled, **RAW).k_ward > 2  # raw units do not transfer across scales


def test_standardised_threshold_is_a_fraction_of_the_variance():
    # four point masses at the corners (+-1, +-1), n/4 copies each; standardised, the total sum
    # of squares is n; merging two neighbouring corners explains 1/4 of it, the last merge 1/2
    n = 40
    corners = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]]) * [3.0, 0.2] + [5.0, 1.0]
    x = torch.from_numpy(np.repeat(corners, n // 4, axis=0))
    f = Standardiser.fit(x)(x)
    assert float((f ** 2).sum()) == pytest.approx(n)
    k = {fr: ward_num_clusters(f.numpy(), standardised_ward_threshold(fr, n)) for fr in (0.2, 0.3, 0.6)}
    assert k == {0.2: 4, 0.3: 2, 0.6: 1}
    assert standardised_ward_threshold(0.5, 100) == pytest.approx(10.0)


class ChannelMeanNet(nn.Module):
    """The 'layer' is an identity 1x1 conv, so its pooled output = the image's channel means."""

    def __init__(self, channels: int = 4):
        super().__init__()
        self.layer = nn.Conv2d(channels, channels, 1, bias=False)
        with torch.no_grad():
            self.layer.weight.copy_(torch.eye(channels)[:, :, None, None])
        self.fc = nn.Linear(channels, 2)

    def forward(self, x):
        return self.fc(self.layer(x).mean(dim=(2, 3)))


def constant_images(means: torch.Tensor, size: int = 4) -> torch.Tensor:
    return means[:, :, None, None].expand(-1, -1, size, size).clone()


def two_concept_world(n_per: int = 15, seed: int = 0):
    """Channel 0 fires (~2) for concepts A (channel 1 = 6) and B (channel 2 = 6); 10 background
    images barely fire it; channel 3 is dead. Returns context, ids of A and B."""
    g = torch.Generator().manual_seed(seed)
    a = torch.tensor([2.0, 6.0, 0.0, 0.0]).repeat(n_per, 1)
    b = torch.tensor([2.0, 0.0, 6.0, 0.0]).repeat(n_per, 1)
    bg = torch.tensor([0.1, 1.0, 1.0, 0.0]).repeat(10, 1)
    means = torch.cat([a, b, bg])
    means[:, :3] += 0.05 * torch.randn(means.shape[0], 3, generator=g)
    labels = torch.cat([torch.zeros(n_per), torch.ones(n_per), torch.zeros(10)]).long()
    data = TensorImages(constant_images(means), labels, 2)
    model = ChannelMeanNet().eval()
    stats = capture(model, data, CaptureSpec("layer", top_k=2 * n_per, tau=None), progress=False)
    ctx = Context(model=model, model_name="mean", layer="layer", fit=data, heldout=data, stats=stats, batch_size=8)
    return ctx, set(range(n_per)), set(range(n_per, 2 * n_per))


def test_fit_finds_the_two_concepts_with_unit_directions_and_gates_new_images():
    ctx, ids_a, ids_b = two_concept_world()
    split = ActivationClustering(n_ref=30).fit(ctx, Target("mean", "layer", 0))
    assert split.k == 2 and split.recomposition == "gating" and split.info["k_ward"] == 2
    assert {frozenset(r) for r in split.reference_ids} == {frozenset(ids_a), frozenset(ids_b)}
    torch.testing.assert_close(split.directions.norm(dim=1), torch.ones(2))
    i_a = 0 if set(split.reference_ids[0]) == ids_a else 1
    expected_a = torch.tensor([2.0, 6.0, 0.0, 0.0]) / np.sqrt(40.0)
    torch.testing.assert_close(split.directions[i_a], expected_a, atol=0.01, rtol=0)
    # a new concept-A image goes wholly to virtual neuron i_a, a new B image to the other one
    new = constant_images(torch.tensor([[1.0, 5.0, 0.0, 0.0], [1.0, 0.0, 5.0, 0.0]]))
    acts = split.activations(new)
    torch.testing.assert_close(acts[0, i_a], new[0, 0])
    torch.testing.assert_close(acts[1, 1 - i_a], new[1, 0])
    assert acts[0, 1 - i_a].abs().max() == 0 and acts[1, i_a].abs().max() == 0


def test_one_concept_gives_a_k1_split_and_none_surviving_is_not_applicable():
    ctx, ids_a, _ = two_concept_world()
    split = ActivationClustering(n_ref=30, threshold=1000.0, outlier_distance=1000.0).fit(ctx, Target("mean", "layer", 0))
    assert split.k == 1 and "k=1" in split.info["note"]
    with pytest.raises(NotApplicable, match="min_cluster_size=31"):
        ActivationClustering(n_ref=30, min_cluster_size=31).fit(ctx, Target("mean", "layer", 0))


def test_standardised_mode_fits_end_to_end():
    ctx, ids_a, ids_b = two_concept_world()
    split = ActivationClustering(n_ref=30, threshold_mode="standardised").fit(ctx, Target("mean", "layer", 0))
    assert {frozenset(r) for r in split.reference_ids} == {frozenset(ids_a), frozenset(ids_b)}
    # defaults of the mode: a fraction 0.2 of the variance -> Ward distance sqrt(2 * 30 * 0.2)
    assert split.info["threshold_mode"] == "standardised" and split.info["outlier_distance"] == 6.0
    assert split.info["ward_threshold"] == pytest.approx(np.sqrt(12.0))
    raw = ActivationClustering(n_ref=30).fit(ctx, Target("mean", "layer", 0))
    assert raw.info["ward_threshold"] == 15.0 and raw.info["outlier_distance"] == 15.0


def test_activation_kmeans_splits_the_two_concepts():
    ctx, ids_a, ids_b = two_concept_world()
    split = ActivationKMeans(n_ref=30).fit(ctx, Target("mean", "layer", 0))
    assert split.k == 2 and split.info["cluster_sizes"] == [15, 15]
    assert {frozenset(r) for r in split.reference_ids} == {frozenset(ids_a), frozenset(ids_b)}
    torch.testing.assert_close(split.directions.norm(dim=1), torch.ones(2))


def test_activation_kmeans_features_are_relu_pooled():
    # the negative channel 1 must not matter: relu'd it is 0 for every image
    ctx, ids_a, ids_b = two_concept_world()
    flipped = copy.deepcopy(ctx.model)
    with torch.no_grad():  # channel 1 of the layer becomes <= 0 everywhere
        flipped.layer.weight[1] *= -1
    split = ActivationKMeans(n_ref=30).fit(dataclasses.replace(ctx, model=flipped), Target("mean", "layer", 0))
    assert {frozenset(r) for r in split.reference_ids} == {frozenset(ids_a), frozenset(ids_b)}
    # plainly: feature = mean_hw relu(z); z = image channel means with channel 1 negated
    z = ctx.fit.data.mean(dim=(2, 3)) * torch.tensor([1.0, -1.0, 1.0, 1.0])
    for group, direction in zip(split.reference_ids, split.directions):
        centroid = z[list(group)].clamp(min=0).mean(0)
        torch.testing.assert_close(direction, centroid / centroid.norm())
    assert float(split.directions[:, 1].abs().max()) < 0.01  # unrelu'd it would be about -0.95


def test_kmeans_groups_with_too_few_distinct_points():
    x = np.array([[0.0, 0.0]] * 5 + [[1.0, 1.0]] * 5)
    with pytest.raises(NotApplicable, match="only 2 distinct"):
        kmeans_groups(x, 3, seed=0, n_init=2)


def test_bad_input_gets_specific_errors():
    ctx, _, _ = two_concept_world()
    with pytest.raises(ValueError, match="k >= 2"):
        ActivationKMeans(k=1)
    with pytest.raises(ValueError, match="threshold_mode must be one of"):
        ActivationClustering(threshold_mode="zscore")
    with pytest.raises(ValueError, match="fraction of the variance in \\(0, 1\\], got 15"):
        ActivationClustering(threshold_mode="standardised", threshold=15.0)
    with pytest.raises(ValueError, match="must be > 0"):
        ActivationClustering(outlier_distance=-1.0)
    with pytest.raises(ValueError, match="exceeds the 40 images"):
        ActivationClustering(n_ref=41).fit(ctx, Target("mean", "layer", 0))
    with pytest.raises(ValueError, match="top_k >= 31"):
        ActivationKMeans(n_ref=31).fit(ctx, Target("mean", "layer", 0))
    with pytest.raises(ValueError, match="differs from the context's layer"):
        ActivationClustering(n_ref=30).fit(ctx, Target("mean", "fc", 0))
    with pytest.raises(IndexError, match="4 channels"):
        ActivationClustering(n_ref=30).fit(ctx, Target("mean", "layer", 9))
    for method in (ActivationClustering(n_ref=30), ActivationKMeans(n_ref=30)):
        with pytest.raises(NotApplicable, match="channel 3 never activates"):
            method.fit(ctx, Target("mean", "layer", 3))
