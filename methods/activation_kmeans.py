"""Activation k-means: the activation-clustering baseline of PURE (Dreyer et al., CVPR-W 2024,
arXiv 2404.06453, github.com/maxdreyer/PURE, notebooks/distance_correlation.ipynb).

For channel c: the top ``n_ref`` fit images by MAXIMUM spatial activation of c (PURE's
reference samples); their feature vectors are the spatial mean of the layer's positive
activations over ALL channels, a_j(x) = mean_hw max(z_j(x), 0); KMeans(k, n_init=10,
random_state=seed) on them (PURE's k-means settings). Clusters are ordered by size, then by
their best-ranked member. Virtual neurons: a new image is hard-gated to the nearest
centroid of its vector, virtual neuron i = gate_i * channel (PURE describes nearest-centroid
assignment of new samples in the paper). ``directions`` are the unit centroids.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from sklearn.cluster import KMeans
from torch import Tensor

from benchmark.core.plugins import Method
from benchmark.core.registry import METHODS
from benchmark.core.types import Context, NotApplicable, Split, Target
from methods._gating import gated_split, nearest_centroid, one_hot_gates
from methods._pooled import check_alive, pooled_activations, pooled_fit, reference_ids


def kmeans_groups(features: np.ndarray, k: int, seed: int, n_init: int) -> list[np.ndarray]:
    """Row indices of each k-means cluster, ordered by size then first row; error if one is empty."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "fewer distinct points than clusters": checked below
        labels = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(features).labels_
    groups = [np.flatnonzero(labels == c) for c in range(k)]
    if any(g.size == 0 for g in groups):
        distinct = np.unique(features, axis=0).shape[0]
        raise NotApplicable(f"only {distinct} distinct activation vectors among the references, fewer than k={k}")
    groups.sort(key=lambda g: (-g.size, int(g[0])))
    return groups


@METHODS.register("activation_kmeans")
@dataclass(frozen=True)
class ActivationKMeans(Method):
    """k-means with fixed k on pooled positive layer activations of the references (PURE's baseline).

    Calibrates: what plain activation-space clustering of a channel's top images achieves,
    the baseline PURE's attribution (circuit) clustering is claimed to beat.
    """

    role: ClassVar[str] = "generic"
    citation: ClassVar[str] = "Dreyer et al. 2024, baseline"

    k: int = 2
    n_ref: int = 100
    seed: int = 0
    n_init: int = 10

    def __post_init__(self) -> None:
        if self.k < 2:
            raise ValueError(f"activation_kmeans splits into k >= 2 clusters, got k={self.k} (use 'identity' for k=1)")
        if self.n_ref < self.k:
            raise ValueError(f"n_ref={self.n_ref} must be >= k={self.k}")
        if self.n_init < 1:
            raise ValueError(f"n_init must be >= 1, got {self.n_init}")

    def fit(self, context: Context, target: Target) -> Split:
        ids = reference_ids(context, target, self.n_ref, by="max")
        check_alive(context, target.channel)
        feats = pooled_fit(context, ids, relu=True)
        groups = kmeans_groups(feats.numpy(), self.k, self.seed, self.n_init)
        centroids = torch.stack([feats[torch.from_numpy(g)].mean(0) for g in groups]).float()
        norms = centroids.norm(dim=1, keepdim=True)
        if bool((norms == 0).any()):
            raise NotApplicable(f"a cluster of channel {target.channel} has no positive layer activation")
        k, model, layer, batch = self.k, context.model, context.layer, context.batch_size

        def gates(images: Tensor) -> Tensor:
            a = pooled_activations(model, layer, images, relu=True, batch_size=batch)
            return one_hot_gates(nearest_centroid(a, centroids.to(a.device)), k)

        return gated_split(
            target=target, method="activation_kmeans", model=model, gates_fn=gates, k=k,
            reference_ids=[ids[torch.from_numpy(g)].tolist() for g in groups],
            directions=centroids / norms, info={"cluster_sizes": [int(g.size) for g in groups]}, memo=context.memo)
