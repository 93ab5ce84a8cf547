"""Concept vectors by activation clustering (O'Mahony, Andrearczyk, Mueller, Graziani,
CVPR-W 2023, arXiv 2304.09707), as their code (scripts/neuron_method.py) implements it.

For channel n: A = the pooled (global-average-pooled) activation vectors of the WHOLE layer
(all C channels) of n's top ``n_ref`` images by pooled activation of n.

1. Ward agglomerative clustering with ``distance_threshold`` gives the number of concepts k
   (sklearn/scipy Ward merge distance: sqrt(2 n_a n_b / (n_a + n_b)) * ||c_a - c_b||).
2. KMeans(k, random_state=seed, n_init=5, max_iter=1000) on A; a member is an outlier when
   its SQUARED distance to its centroid is >= ``outlier_distance``; clusters with fewer than
   ``min_cluster_size`` surviving members are dropped.
3. Concept vector v_i = mean of cluster i's surviving members (raw pooled vectors) / L2 norm,
   exposed as ``Split.directions`` (k, C).

Units (``threshold_mode``); ``None`` takes the mode's default (:data:`DEFAULTS`):

* ``"raw"`` (the paper; defaults 15 and 15): both numbers in raw activation units, so they
  are layer- and model-specific (the paper tuned them for InceptionV3 Mixed_7b).
* ``"standardised"`` (defaults 0.2 and 6): the references are z-scored per dimension and
  divided by sqrt(D) (D = non-constant dimensions; constant ones are ignored):
  f = (a - mean) / (std * sqrt(D)), so the mean squared norm of f is exactly 1 and the
  total sum of squares of the n references is n. ``threshold`` is the FRACTION of that total
  variance a Ward merge must explain to be kept apart: a merge of clusters u, v costs
  dSS = n_u n_v / (n_u + n_v) ||c_u - c_v||^2 = d_ward^2 / 2, so the Ward cut is at
  d_ward = sqrt(2 n threshold) (:func:`standardised_ward_threshold`). ``outlier_distance`` is
  the squared distance in f, i.e. a multiple of the references' mean squared distance
  to their mean. Both are dimensionless, so one setting can serve every layer, model and
  n_ref (whether it should is an empirical question). The default 0.2 was read
  off the world CNN (benchmark.sources.world): on three planted channels the top split of the
  references explained 0.37-0.46 of the variance and the next one 0.09-0.17.

Virtual neurons (the benchmark's addition; the paper projects images onto v_i): a new image
is hard-gated to the nearest surviving centroid (mean of the surviving members in the
clustering space) of its pooled whole-layer vector; virtual neuron i = gate_i * channel.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from sklearn.cluster import AgglomerativeClustering, KMeans
from torch import Tensor

from benchmark.core.plugins import Method
from benchmark.core.registry import METHODS
from benchmark.core.types import Context, NotApplicable, Split, Target
from methods._gating import gated_split, nearest_centroid, one_hot_gates
from methods._pooled import check_alive, pooled_activations, pooled_fit, reference_ids

THRESHOLD_MODES = ("raw", "standardised")
# mode -> (threshold, outlier_distance) used when a field is None (see the module docstring)
DEFAULTS: dict[str, tuple[float, float]] = {"raw": (15.0, 15.0), "standardised": (0.2, 6.0)}


@dataclass(frozen=True)
class ConceptClusters:
    """Result of the clustering on an (n, D) feature matrix (row indices throughout).

    ``members[i]`` are the surviving rows of concept i (concepts ordered by size, then by
    their first row), ``centroids`` (k, D) their means, ``outliers`` the removed rows,
    ``dropped`` the surviving sizes of the clusters dropped as too small.
    """

    k_ward: int
    k_kmeans: int
    members: tuple[tuple[int, ...], ...]
    centroids: Tensor
    outliers: tuple[int, ...]
    dropped: tuple[int, ...]


def ward_num_clusters(features: np.ndarray, threshold: float) -> int:
    """Number of clusters of a Ward tree cut at merge distance ``threshold``."""
    if features.shape[0] < 2:
        return int(features.shape[0])
    ward = AgglomerativeClustering(n_clusters=None, distance_threshold=threshold, linkage="ward")
    return int(ward.fit(features).n_clusters_)


def concept_clusters(features: Tensor | np.ndarray, *, threshold: float, outlier_distance: float,
                     min_cluster_size: int, seed: int = 0, k_max: int | None = None,
                     n_init: int = 5, max_iter: int = 1000) -> ConceptClusters:
    """Steps 1-2 of the module docstring on ``features`` (n, D), already in clustering units."""
    x = np.asarray(features.detach().cpu() if isinstance(features, Tensor) else features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"clustering needs an (n >= 2, D) feature matrix, got shape {x.shape}")
    k_ward = ward_num_clusters(x, threshold)
    k = k_ward if k_max is None else min(k_ward, k_max)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate points: sklearn warns, we check emptiness below
        km = KMeans(n_clusters=k, random_state=seed, n_init=n_init, max_iter=max_iter).fit(x)
    labels = km.labels_
    sq_dist = ((x - km.cluster_centers_[labels]) ** 2).sum(1)
    keep = sq_dist < outlier_distance
    groups: list[np.ndarray] = []
    dropped: list[np.ndarray] = []
    for c in range(k):
        rows = np.flatnonzero((labels == c) & keep)
        (groups if rows.size >= min_cluster_size else dropped).append(rows)
    groups.sort(key=lambda r: (-r.size, int(r[0])))
    centroids = torch.from_numpy(np.stack([x[r].mean(0) for r in groups])) if groups \
        else torch.empty(0, x.shape[1], dtype=torch.float64)
    return ConceptClusters(
        k_ward=k_ward, k_kmeans=k, members=tuple(tuple(int(i) for i in r) for r in groups),
        centroids=centroids, outliers=tuple(int(i) for i in np.flatnonzero(~keep)),
        dropped=tuple(sorted((int(r.size) for r in dropped), reverse=True)),
    )


def standardised_ward_threshold(fraction: float, n: int) -> float:
    """Ward merge distance, in standardised units f, of a merge explaining ``fraction`` of the
    total variance of n standardised samples (total sum of squares n): sqrt(2 n fraction)."""
    return (2.0 * n * fraction) ** 0.5


@dataclass(frozen=True)
class Standardiser:
    """f = (a - mean) / (std * sqrt(D_eff)), the ``standardised`` units (module docstring)."""

    mean: Tensor
    scale: Tensor

    @classmethod
    def fit(cls, a: Tensor) -> "Standardiser":
        std = a.std(dim=0, unbiased=False)
        varying = std > 1e-12 * a.abs().amax().clamp(min=1e-30)
        d_eff = max(int(varying.sum()), 1)
        return cls(a.mean(0), torch.where(varying, std, torch.ones_like(std)) * d_eff ** 0.5)

    def __call__(self, a: Tensor) -> Tensor:
        return (a - self.mean.to(a)) / self.scale.to(a)


@METHODS.register("activation_clustering")
@dataclass(frozen=True)
class ActivationClustering(Method):
    """Concept vectors by Ward + k-means clustering of pooled layer activations (O'Mahony et al. 2023).

    Calibrates: how far the unsupervised structure of whole-layer activations of a
    channel's top images goes in separating its concepts, with k chosen by a threshold.
    """

    role: ClassVar[str] = "method"
    citation: ClassVar[str] = "O'Mahony et al. 2023"

    n_ref: int = 100
    threshold: float | None = None
    threshold_mode: str = "raw"
    outlier_distance: float | None = None
    min_cluster_size: int = 5
    seed: int = 0
    k_max: int = 10

    def __post_init__(self) -> None:
        if self.threshold_mode not in THRESHOLD_MODES:
            raise ValueError(f"threshold_mode must be one of {THRESHOLD_MODES}, got {self.threshold_mode!r}")
        if self.n_ref < 2:
            raise ValueError(f"n_ref must be >= 2 to cluster, got {self.n_ref}")
        threshold, outlier = self.resolved()
        if not threshold > 0 or not outlier > 0:
            raise ValueError(f"threshold and outlier_distance must be > 0, got {threshold}, {outlier}")
        if self.threshold_mode == "standardised" and not threshold <= 1:
            raise ValueError(f"a standardised threshold is a fraction of the variance in (0, 1], got {threshold}")
        if self.min_cluster_size < 1:
            raise ValueError(f"min_cluster_size must be >= 1, got {self.min_cluster_size}")
        if self.k_max < 1:
            raise ValueError(f"k_max must be >= 1, got {self.k_max}")

    def resolved(self) -> tuple[float, float]:
        """(threshold, outlier_distance) with None replaced by the mode's default."""
        threshold, outlier = DEFAULTS[self.threshold_mode]
        return (threshold if self.threshold is None else float(self.threshold),
                outlier if self.outlier_distance is None else float(self.outlier_distance))

    def fit(self, context: Context, target: Target) -> Split:
        ids = reference_ids(context, target, self.n_ref, by="mean")
        check_alive(context, target.channel)
        raw = pooled_fit(context, ids)  # (n_ref, C) float64
        threshold, outlier = self.resolved()
        transform = None
        if self.threshold_mode == "standardised":
            transform = Standardiser.fit(raw)
            threshold = standardised_ward_threshold(threshold, raw.shape[0])
        feats = transform(raw) if transform is not None else raw
        found = concept_clusters(feats, threshold=threshold, outlier_distance=outlier,
                                 min_cluster_size=self.min_cluster_size, seed=self.seed, k_max=self.k_max)
        info = {"k_ward": found.k_ward, "k_kmeans": found.k_kmeans, "n_outliers": len(found.outliers),
                "dropped_cluster_sizes": list(found.dropped), "threshold_mode": self.threshold_mode,
                "ward_threshold": threshold, "outlier_distance": outlier}
        if not found.members:
            raise NotApplicable(
                f"no concept survived for channel {target.channel}: k-means found {found.k_kmeans} clusters, "
                f"{len(found.outliers)} of {self.n_ref} references were outliers and the surviving cluster "
                f"sizes {list(found.dropped)} are all < min_cluster_size={self.min_cluster_size}")
        k = len(found.members)
        if k == 1:
            info["note"] = "one concept survived: the channel is monosemantic at this threshold (k=1 split)"
        directions = torch.stack([raw[list(m)].mean(0) for m in found.members])
        norms = directions.norm(dim=1, keepdim=True)
        if bool((norms == 0).any()):
            raise NotApplicable(f"a concept of channel {target.channel} has a zero mean activation vector")
        centroids = found.centroids.float()
        model, layer, batch = context.model, context.layer, context.batch_size

        def gates(images: Tensor) -> Tensor:
            a = pooled_activations(model, layer, images, relu=False, batch_size=batch).double()
            a = transform(a) if transform is not None else a
            return one_hot_gates(nearest_centroid(a, centroids.to(a.device)), k)

        return gated_split(
            target=target, method="activation_clustering", model=model, gates_fn=gates, k=k,
            reference_ids=[ids[list(m)].tolist() for m in found.members],
            directions=(directions / norms).float(), info=info, memo=context.memo)
