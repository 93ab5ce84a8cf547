"""Embedding-distance separation of a split's virtual neurons (PURE: Dreyer, Purelku,
Vielhaben, Samek, Lapuschkin, CVPR-W 2024, arXiv 2404.06453;
``experiments/disentangling/eval_CLIP_alignment.py`` of github.com/maxdreyer/PURE).

Definition. For one split (one channel) every virtual neuron i contributes images:

* ``source="crops"``: its reference images (``split.reference_ids[i]`` into ``context.fit``,
  the first ``max_refs_per_neuron``) cropped to the receptive field of virtual neuron i
  (:func:`benchmark.crops.receptive_field_crops` with ``lambda x: split.activations(x)[:, i]``);
* ``source="fvis"``: ``fvis_per_neuron`` feature visualisations of virtual neuron i
  (a backend of ``benchmark.registry.FEATURE_VIS``).

The images (RGB in [0, 1]) are embedded by a pluggable embedder (``EMBEDDERS``; CLIP in
PURE, the synthetic world's judge network offline) and labelled by their neuron i. With
D the pairwise Euclidean distances of the embeddings, over ORDERED pairs a != b,

    intra = mean D[a, b] over pairs with the same label,
    inter = mean D[a, b] over pairs with different labels,
    overall = mean D[a, b] over all pairs (PURE's unclustered baseline),

and ``separation = inter - intra`` (higher is better). Main columns: ``separation`` and
``baseline`` (= overall; no direction). Extras: ``intra``, ``inter``, ``images_v{i}``.
k = 1 or a neuron with fewer than 2 images: not applicable. The embedder and the source
are named in :attr:`EmbeddingSeparation.label` (numbers only in the score dict).
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch
from torch import Tensor

from benchmark.crops import receptive_field_crops
from benchmark.registry import EMBEDDERS, FEATURE_VIS, METRICS
from benchmark.types import Column, Context, NotApplicable, Split
from metrics._common import batches

SOURCES = ("crops", "fvis")


def separation(embeddings: Tensor, groups: Sequence[int] | Tensor) -> tuple[float, float, float]:
    """(inter, intra, overall) mean Euclidean distances over ordered pairs a != b.

    Raises:
        ValueError: fewer than two groups, or a group with fewer than two members (intra or
            inter would be an empty mean).
    """
    x = torch.as_tensor(embeddings).double()
    g = torch.as_tensor(groups).long().flatten()
    if x.dim() != 2 or x.shape[0] != g.numel():
        raise ValueError(f"embeddings must be (N, D) with one group per row, got {tuple(x.shape)} and {g.numel()} groups")
    _, counts = torch.unique(g, return_counts=True)
    if counts.numel() < 2 or int(counts.min()) < 2:
        raise ValueError(f"separation needs >= 2 groups of >= 2 members each, got group sizes {counts.tolist()}")
    d = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")  # exact, not via x.x^T
    same = g[:, None] == g[None, :]
    off_diagonal = ~torch.eye(g.numel(), dtype=torch.bool)
    intra = d[same & off_diagonal].mean()
    inter = d[~same].mean()
    overall = d[off_diagonal].mean()
    return float(inter), float(intra), float(overall)


@functools.lru_cache(maxsize=8)
def _build_embedder(name: str, args: tuple[tuple[str, Any], ...]) -> Any:
    """One embedder instance per (name, arguments), reused across splits."""
    return EMBEDDERS.get(name)(**dict(args))


@METRICS.register("embedding_separation")
@dataclass(frozen=True)
class EmbeddingSeparation:
    """Inter - intra embedding distance of the virtual neurons' images (PURE, Dreyer et al. 2024).

    Crops of reference images or feature visualisations; the unclustered mean distance is
    the baseline.

    Attributes:
        embedder, embedder_args: name in ``EMBEDDERS`` and its constructor arguments as
            (name, value) pairs (a tuple keeps the metric hashable).
        source: "crops" (receptive-field crops of reference images) or "fvis".
        max_refs_per_neuron: first reference images used per virtual neuron.
        crop_size, crop_threshold: crop side in pixels; heatmap fraction of its max that
            bounds the crop (PURE: 2%).
        fvis_backend, fvis_args, fvis_per_neuron: backend in ``FEATURE_VIS``, its arguments
            (input size, device and seed default to the data's / context's), images per neuron.
    """

    embedder: str = "judge"
    embedder_args: tuple[tuple[str, Any], ...] = ()
    source: str = "crops"
    max_refs_per_neuron: int = 20
    crop_size: int = 64
    crop_threshold: float = 0.02
    fvis_backend: str = "maco"
    fvis_args: tuple[tuple[str, Any], ...] = ()
    fvis_per_neuron: int = 4

    columns: ClassVar[tuple[Column, ...]] = (
        Column("separation", True),
        Column("baseline", None, (0.0, None)),
    )
    scope: ClassVar[str] = "split"

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        for name, least in (("max_refs_per_neuron", 2), ("fvis_per_neuron", 2), ("crop_size", 8)):
            if getattr(self, name) < least:
                raise ValueError(f"{name} must be >= {least}, got {getattr(self, name)}")
        if not 0.0 <= self.crop_threshold < 1.0:
            raise ValueError(f"crop_threshold must be in [0, 1), got {self.crop_threshold}")
        for name in ("embedder_args", "fvis_args"):
            value = tuple(tuple(pair) for pair in getattr(self, name))
            if any(len(pair) != 2 or not isinstance(pair[0], str) for pair in value):
                raise ValueError(f"{name} must be (name, value) pairs, got {getattr(self, name)!r}")
            object.__setattr__(self, name, value)

    @property
    def label(self) -> str:
        return f"embedding_separation[{self.embedder},{self.source}]"

    def score(self, split: Split, context: Context) -> dict[str, float]:
        if split.k < 2:
            raise NotApplicable(f"{split.method} gives k={split.k} virtual neuron: nothing to separate")
        images, groups = self.images(split, context)
        sizes = torch.bincount(groups, minlength=split.k)
        if int(sizes.min()) < 2:
            raise NotApplicable(f"every virtual neuron needs >= 2 images to compare; got {sizes.tolist()} ({self.source})")
        embedder = _build_embedder(self.embedder, self.embedder_args)
        with torch.no_grad():
            emb = torch.cat([embedder.embed(images[s:s + context.batch_size]).detach().double().cpu()
                             for s in range(0, images.shape[0], context.batch_size)])
        inter, intra, overall = separation(emb, groups)
        out = {"separation": inter - intra, "baseline": overall, "inter": inter, "intra": intra}
        out.update({f"images_v{i}": float(n) for i, n in enumerate(sizes.tolist())})
        return out

    def images(self, split: Split, context: Context) -> tuple[Tensor, Tensor]:
        """RGB images in [0, 1] (N, 3, h, w) and their virtual-neuron labels (N,)."""
        if self.source == "fvis":
            return self._fvis(split, context)
        if not split.reference_ids:
            raise NotApplicable(f"{split.method} gives no reference samples to crop")
        parts, groups = [], []
        for i, ids in enumerate(split.reference_ids):
            ids = list(ids)[: self.max_refs_per_neuron]
            if not ids:
                continue
            fn = functools.partial(_virtual_map, split, i)
            for images, _ in batches(context.fit, ids, context.batch_size, context.device):
                with torch.enable_grad():  # the crop heatmap is a gradient
                    crops = receptive_field_crops(context.model, split.target.layer, fn, images, self.crop_size, self.crop_threshold)
                parts.append(context.fit.to_unit_range(crops.detach()).cpu())
                groups.extend([i] * crops.shape[0])
        if not parts:
            raise NotApplicable(f"{split.method} gives no reference samples to crop")
        return torch.cat(parts), torch.tensor(groups, dtype=torch.long)

    def _fvis(self, split: Split, context: Context) -> tuple[Tensor, Tensor]:
        from benchmark.fvis._objectives import split_objective

        neurons = [i for i in range(split.k) for _ in range(self.fvis_per_neuron)]
        backend = self._backend(context)
        with torch.enable_grad():
            rendering = backend.render(split_objective(split, neurons), len(neurons), context.fit.from_unit_range)
        return rendering.images.detach().float().cpu().clamp(0, 1), torch.tensor(neurons, dtype=torch.long)

    def _backend(self, context: Context) -> Any:
        """The feature-visualisation backend; fills in the data's input size, the context's
        device and seed where the backend has such fields and they were not given."""
        cls = FEATURE_VIS.get(self.fvis_backend)
        args = dict(self.fvis_args)
        names = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
        defaults = {"input_size": int(context.fit[0][0].shape[-1]), "device": str(context.device), "seed": context.seed}
        for key, value in defaults.items():
            if key in names and key not in args:
                args[key] = value
        return cls(**args)


def _virtual_map(split: Split, i: int, images: Tensor) -> Tensor:
    """(N, H, W) map of virtual neuron i (the channel function handed to the crop helper)."""
    return split.activations(images)[:, i]
