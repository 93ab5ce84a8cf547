"""PURE: circuit clustering of a neuron's reference samples (Dreyer, Purelku, Vielhaben, Samek,
Lapuschkin, "PURE: Turning Polysemantic Neurons Into Pure Features by Identifying Relevant
Circuits", CVPR-W 2024, arXiv 2404.06453; code github.com/maxdreyer/PURE).

For channel c of the layer (output ``a_c``) and each reference image, the attribution vector
over the lower layer's channels j (paper Sec. 3, the "circuit" relevances; computed by
:func:`benchmark.engine.attribution.neuron_attributions`) is::

    r_j = sum_hw x_j * d( sum_hw max(a_c, 0) * a_c ) / d x_j,    r <- r / (sum_j |r_j| + 1e-10)

The reference vectors are clustered with k-means; each cluster is a circuit = a virtual neuron.

Follows the authors' code in: references = the ``n_ref`` (100) images with the largest MAXIMUM
spatial activation of the neuron (``context.stats.top_max_ids``, recomputed by one pass over
``context.fit`` when the statistics hold fewer); initial relevance = the positive activation
map with plain gradient rules, Gradient x Input read at the lower layer (the authors use
layer4 over the output of layer3: ``lower_layer="layer3"``; the default ``None`` reads the
layer's own input); L1 normalisation with 1e-10; ``KMeans(n_clusters=k, n_init=10,
random_state=0)``. Clusters are then ordered by size, ties by their best-ranked member.

Deviations / additions: (1) assignment of a new sample to a circuit (nearest k-means
centroid of its own attribution vector) is described in the paper but not implemented in the
code; here it is, with hard gates (virtual neuron i = gate_i(x) * a_c, so the virtual neurons
sum to the channel). (2) ``k=None`` chooses k in ``k_range`` by the best silhouette score
(Euclidean, on the reference vectors; ties -> smaller k); the paper reports fixed k in 2..5.
(3) ``backend`` may replace plain gradients by zennit LRP or integrated gradients.
(4) :meth:`Pure.polysemanticity` (detection track): cosine similarity of the class-mean
attribution vectors of the two concepts (up to ``n_concept`` fit images each, a seeded subset).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from benchmark.core.plugins import Method
from benchmark.core.registry import METHODS
from benchmark.core.types import Context, NotApplicable, Split, Target
from benchmark.engine.attribution import BACKENDS, neuron_attributions, reference_attributions
from benchmark.engine.layers import check_channel
from benchmark.engine.references import top_max_references
from benchmark.storage.cache import model_fingerprint
from methods._gating import gated_split, nearest_centroid, one_hot_gates


def attribution_vectors(context: Context, channel: int, ids: Tensor, lower_layer: str | None,
                        backend: str = "gradient", normalize: bool = True) -> Tensor:
    """(len(ids), C_lower) float64 CPU attribution vectors of ``context.fit`` samples ``ids``."""
    rows = []
    for start in range(0, ids.numel(), context.batch_size):
        images = context.fit.images(ids[start:start + context.batch_size]).to(context.device)
        rows.append(neuron_attributions(context.model, context.layer, lower_layer, images, [channel],
                                        backend=backend, normalize=normalize)[0])
    return torch.cat(rows).double().cpu()


def kmeans(features: np.ndarray, k: int, n_init: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels (n,) and centroids (k, d), clusters ordered by size then by their first row."""
    from sklearn.cluster import KMeans

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate points: distinct count is checked by the caller
        km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(features)
    groups = [np.flatnonzero(km.labels_ == i) for i in range(k)]
    order = sorted(range(k), key=lambda i: (-groups[i].size, int(groups[i][0]) if groups[i].size else 1 << 62))
    relabel = np.empty(k, dtype=np.int64)
    relabel[order] = np.arange(k)
    return relabel[km.labels_], km.cluster_centers_[order]


def choose_k(features: np.ndarray, ks: tuple[int, ...], n_init: int, seed: int):
    """k-means for each candidate k; returns (k, labels, centroids, silhouette by k).

    With one candidate it is used as is; with several the best silhouette score wins (ties
    -> smaller k). Candidates with more clusters than distinct vectors are skipped.
    """
    from sklearn.metrics import silhouette_score

    n, distinct = features.shape[0], np.unique(features, axis=0).shape[0]
    valid = [k for k in ks if k <= distinct and k < n]
    if not valid:
        raise NotApplicable(f"only {distinct} distinct attribution vectors among {n} references: "
                            f"cannot form k in {ks} circuits")
    best: tuple | None = None
    scores: dict[int, float] = {}
    for k in valid:
        labels, centroids = kmeans(features, k, n_init, seed)
        if len(valid) == 1:
            return k, labels, centroids, scores
        scores[k] = float(silhouette_score(features, labels))
        if best is None or scores[k] > scores[best[0]]:
            best = (k, labels, centroids)
    assert best is not None  # valid holds >= 2 values here
    return (*best, scores)


@METHODS.register("pure")
@dataclass(frozen=True)
class Pure(Method):
    """PURE (Dreyer et al. 2024): k-means circuits of the references' lower-layer attributions.

    Fields: ``k`` circuits (None: best silhouette over ``k_range``); ``n_ref`` references by max
    activation; ``lower_layer`` whose output is attributed (None: the layer's input);
    ``backend`` of :mod:`benchmark.engine.attribution`; ``normalize`` (L1); k-means ``n_init`` and
    ``seed``; ``n_concept`` images per concept for :meth:`polysemanticity`.
    """

    role: ClassVar[str] = "method"
    citation: ClassVar[str] = "Dreyer et al. 2024"

    k: int | None = 2
    k_range: tuple[int, ...] = (2, 3, 4, 5)
    n_ref: int = 100
    lower_layer: str | None = None
    backend: str = "gradient"
    normalize: bool = True
    n_init: int = 10
    seed: int = 0
    n_concept: int = 100

    def __post_init__(self) -> None:
        object.__setattr__(self, "k_range", tuple(int(k) for k in self.k_range))
        if self.k is not None and self.k < 2:
            raise ValueError(f"pure splits into k >= 2 circuits (or k=None to choose in k_range), got k={self.k}")
        if not self.k_range or min(self.k_range) < 2:
            raise ValueError(f"k_range must be non-empty with every k >= 2, got {self.k_range}")
        largest = self.k if self.k is not None else max(self.k_range)
        if self.n_ref <= largest:
            raise ValueError(f"n_ref={self.n_ref} must exceed the number of circuits ({largest})")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown attribution backend {self.backend!r}; available: {', '.join(sorted(BACKENDS))}")
        if self.n_init < 1 or self.n_concept < 1:
            raise ValueError(f"n_init and n_concept must be >= 1, got {self.n_init} and {self.n_concept}")

    def _check(self, context: Context, channel: int, layer: str | None = None) -> None:
        if layer is not None and layer != context.layer:
            raise ValueError(f"target layer {layer!r} differs from the context's layer {context.layer!r}: "
                             "the cached statistics (reference samples) describe the context's layer only")
        check_channel(channel, context.stats.num_channels, context.layer)

    def _spec(self, context: Context, channel: int, ids: Tensor) -> dict:
        return {"model": model_fingerprint(context.model, context.memo), "dataset": context.fit.fingerprint,
                "layer": context.layer, "lower_layer": self.lower_layer, "channel": int(channel),
                "ids": [int(i) for i in ids], "backend": self.backend, "normalize": self.normalize}

    def _vectors(self, context: Context, channel: int, ids: Tensor) -> Tensor:
        compute = lambda: {"r": attribution_vectors(context, channel, ids, self.lower_layer,  # noqa: E731
                                                    self.backend, self.normalize)}
        if context.cache is None:
            return compute()["r"]
        return context.cache.get_or_compute("pure_attributions", self._spec(context, channel, ids), compute)["r"]

    def prepare(self, context: Context, targets) -> None:
        """The reference attributions of every target channel at once (one forward per batch
        of the union of their references, :func:`benchmark.engine.attribution.reference_attributions`),
        written to the cache that :meth:`fit` reads: same vectors, fewer forwards. A no-op
        without a cache or for backends other than ``gradient``; channels that :meth:`fit`
        refuses are left to it."""
        if context.cache is None or self.backend != "gradient":
            return
        todo: dict[int, tuple[Tensor, dict]] = {}
        for target in targets:
            try:
                self._check(context, target.channel, target.layer)
                ids, values = top_max_references(context, target.channel, self.n_ref)
            except (ValueError, IndexError):
                continue
            spec = self._spec(context, target.channel, ids)
            if float(values.max()) > 0.0 and not context.cache.path("pure_attributions", spec).exists():
                todo[target.channel] = (ids, spec)
        if len(todo) < 2:  # one channel: fit's own single-neuron pass is as cheap
            return
        vectors = reference_attributions(context.model, context.layer, self.lower_layer, context.fit,
                                         {c: ids for c, (ids, _) in todo.items()}, context.batch_size,
                                         context.device, self.normalize)
        for channel, (_, spec) in todo.items():
            context.cache.save("pure_attributions", spec, {"r": vectors[channel].double().cpu()})

    def fit(self, context: Context, target: Target) -> Split:
        channel = target.channel
        self._check(context, channel, target.layer)
        ids, values = top_max_references(context, channel, self.n_ref)
        if float(values.max()) <= 0.0:
            raise NotApplicable(f"channel {channel} never activates on its {self.n_ref} references "
                                f"(largest max activation {float(values.max()):g} <= 0): no circuits to find")
        features = self._vectors(context, channel, ids)
        ks = (self.k,) if self.k is not None else self.k_range
        k, labels, centroids_np, scores = choose_k(features.numpy(), ks, self.n_init, self.seed)
        centroids = torch.from_numpy(centroids_np).float()
        model, layer, lower, batch = context.model, context.layer, self.lower_layer, context.batch_size
        backend, normalize = self.backend, self.normalize

        def gates(images: Tensor) -> Tensor:
            rows = [neuron_attributions(model, layer, lower, images[i:i + batch].detach(), [channel],
                                        backend=backend, normalize=normalize)[0]
                    for i in range(0, images.shape[0], batch)]
            return one_hot_gates(nearest_centroid(torch.cat(rows), centroids.to(images.device)), k)

        labels_t = torch.from_numpy(labels)
        info = {"k_selection": "fixed" if self.k is not None else "silhouette", "silhouette": scores,
                "cluster_sizes": [int((labels == i).sum()) for i in range(k)],
                "inactive_references": int((values <= 0).sum()), "features": features.float(),
                "clusters": labels_t, "centroids": centroids}
        return gated_split(target=target, method="pure", model=model, gates_fn=gates, k=k,
                           reference_ids=[ids[labels_t == i].tolist() for i in range(k)], info=info, memo=context.memo)

    def polysemanticity(self, context: Context, channel: int, concept_a, concept_b) -> float:
        """Cosine similarity of the mean attribution vectors of two concepts (class tuples);
        low = the channel uses different circuits for them (polysemantic)."""
        self._check(context, channel)
        means = [self._concept_mean(context, channel, concept) for concept in (concept_a, concept_b)]
        norms = [float(m.norm()) for m in means]
        if min(norms) == 0.0:
            raise NotApplicable(f"channel {channel} has zero attribution on the images of concept "
                                f"{(concept_a, concept_b)[norms.index(0.0)]}: cosine undefined")
        return float(means[0] @ means[1] / (norms[0] * norms[1]))

    def _concept_ids(self, context: Context, concept) -> Tensor:
        classes = tuple(int(c) for c in (concept if isinstance(concept, (tuple, list)) else (concept,)))
        ids = context.fit.indices_of(classes)
        if ids.numel() == 0:
            raise ValueError(f"no fit images of classes {classes}")
        if ids.numel() > self.n_concept:
            pick = torch.randperm(ids.numel(), generator=torch.Generator().manual_seed(self.seed))[:self.n_concept]
            ids = ids[pick.sort().values]
        return ids

    def _concept_mean(self, context: Context, channel: int, concept) -> Tensor:
        return self._vectors(context, channel, self._concept_ids(context, concept)).mean(0)

    def prepare_detection(self, context: Context, targets) -> None:
        """The attributions :meth:`polysemanticity` reads for every (channel, concept) of
        ``targets``, grouped by concept: one forward per batch of a concept's images shared by
        all channels that need it (backwards batched over them), written to the cache.
        A no-op without a cache or for backends other than ``gradient``."""
        if context.cache is None or self.backend != "gradient":
            return
        by_concept: dict[tuple[int, ...], tuple[Tensor, dict[int, dict]]] = {}
        for target in targets:
            for concept in (target.concepts or ())[:2]:
                try:
                    check_channel(target.channel, context.stats.num_channels, context.layer)
                    ids = self._concept_ids(context, concept)
                except (ValueError, IndexError):
                    continue
                spec = self._spec(context, target.channel, ids)
                if not context.cache.path("pure_attributions", spec).exists():
                    by_concept.setdefault(tuple(ids.tolist()), (ids, {}))[1][target.channel] = spec
        for ids, specs in by_concept.values():
            channels = sorted(specs)
            rows = []
            for start in range(0, ids.numel(), context.batch_size):
                images = context.fit.images(ids[start:start + context.batch_size]).to(context.device)
                rows.append(neuron_attributions(context.model, context.layer, self.lower_layer, images, channels,
                                                normalize=self.normalize).double().cpu())
            vectors = torch.cat(rows, dim=1)
            for g, channel in enumerate(channels):
                context.cache.save("pure_attributions", specs[channel], {"r": vectors[g]})
