"""Core types shared by the harness, the methods and the metrics.

* :class:`Target` names what is disentangled (model, layer, channel, optional concepts).
* :class:`Split` is a method's answer: k virtual neurons and how they recompose the channel.
* :class:`Context` is everything a method or metric may read (model, data, cached stats).
* :class:`Column` describes one number a metric reports. The plug-in base classes
  (``Method``, ``Metric``) are in :mod:`benchmark.core.plugins`.
* :class:`NotApplicable` is raised by a method or metric that does not apply to a target;
  the tables show "—" for it, never 0.

Recomposition identities (DESIGN.md): ``surgery``: orig = sum_i d_i - (k-1) * res
(Hesse et al. 2025, k = 2: d1 + d2 - res); ``gating``: virtual_i = w_i(x) * orig with
sum_i w_i = 1, so orig = sum_i virtual_i; ``dictionary``: orig = sum_i v_i + res, where v_i
sums the contributions of a group of dictionary atoms (SAE latents, NMF components) and res
is what no group carries (reconstruction error, decoder bias, conv bias).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch
from torch import Tensor, nn

from benchmark.core.errors import NotApplicable as NotApplicable
from benchmark.core.memo import RunMemo  # re-exported: plug-ins import it from here

if TYPE_CHECKING:  # pragma: no cover
    from benchmark.engine.layer_stats import LayerStats
    from benchmark.sources.datasets import ImageDataset
    from benchmark.storage.cache import Cache

RECOMPOSITIONS = ("surgery", "gating", "dictionary")
WITH_RESIDUAL = ("surgery", "dictionary")  # recompositions that need a residual_fn


@dataclass(frozen=True)
class Target:
    """One channel to disentangle.

    ``concepts`` optionally gives the concepts the track supplies: one tuple of class
    indices per concept (a concept may be a SET of classes), e.g. ``((61, 62), (687,))``.
    """

    model: str
    layer: str
    channel: int
    concepts: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self) -> None:
        if self.channel < 0:
            raise ValueError(f"channel must be >= 0, got {self.channel}")
        if self.concepts is not None:
            object.__setattr__(
                self, "concepts", tuple(tuple(int(c) for c in cs) for cs in self.concepts)
            )
            if any(len(cs) == 0 for cs in self.concepts):
                raise ValueError(f"every concept needs at least one class: {self.concepts}")

    @property
    def key(self) -> str:
        """Stable text id used in result tables."""
        c = "" if self.concepts is None else ":" + "|".join(
            "+".join(map(str, cs)) for cs in self.concepts
        )
        return f"{self.layer}#{self.channel}{c}"


@dataclass(frozen=True)
class Split:
    """A method's answer for one target: k virtual neurons.

    ``virtual_fn(images_nchw) -> (N, k, H, W)`` computes the virtual neurons through the
    model (it must be differentiable w.r.t. the images, for feature visualisation).
    ``residual_fn(images) -> (N, H, W)`` exists for surgery and dictionary methods only.
    ``reference_ids[i]`` are indices into ``context.fit`` of virtual neuron i's references.
    ``model`` is a rewritten COPY of the model (surgery), with the same logits.
    ``directions`` (k, C_out) are unit concept vectors in the layer's channel space
    (concept-vector methods).
    """

    target: Target
    method: str
    k: int
    recomposition: str
    virtual_fn: Callable[[Tensor], Tensor]
    residual_fn: Callable[[Tensor], Tensor] | None = None
    reference_ids: tuple[tuple[int, ...], ...] = ()
    concepts: tuple[tuple[int, ...], ...] | None = None
    model: nn.Module | None = None
    directions: Tensor | None = None
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.recomposition not in RECOMPOSITIONS:
            raise ValueError(f"recomposition must be one of {RECOMPOSITIONS}, got {self.recomposition!r}")
        if self.k < 1:
            raise ValueError(f"a split needs k >= 1 virtual neurons, got {self.k}")
        if self.recomposition in WITH_RESIDUAL and self.residual_fn is None:
            raise ValueError(f"a {self.recomposition} split needs a residual_fn")
        if self.reference_ids and len(self.reference_ids) != self.k:
            raise ValueError(f"reference_ids has {len(self.reference_ids)} groups for k={self.k}")

    def activations(self, images: Tensor) -> Tensor:
        """(N, k, H, W) virtual neuron activations."""
        out = self.virtual_fn(images)
        if out.dim() != 4 or out.shape[1] != self.k:
            raise RuntimeError(f"{self.method}: virtual_fn returned shape {tuple(out.shape)}, expected (N, {self.k}, H, W)")
        return out

    def residual(self, images: Tensor) -> Tensor | None:
        return None if self.residual_fn is None else self.residual_fn(images)

    def recompose(self, virtual_nkhw: Tensor, residual_nhw: Tensor | None = None) -> Tensor:
        """The original channel (N, H, W) rebuilt from the virtual neurons."""
        total = virtual_nkhw.sum(dim=1)
        if self.recomposition in WITH_RESIDUAL:
            assert residual_nhw is not None, f"{self.recomposition} recomposition needs the residual"
            if self.recomposition == "surgery":
                return total - (self.k - 1) * residual_nhw
            return total + residual_nhw
        return total


@dataclass(frozen=True)
class PlantedTruth:
    """Ground truth of a planted polysemantic channel: ``parts_fn(images) -> (N, 2, H, W)``
    with planted channel == parts.sum(1); ``classes[i]`` are the classes part i serves;
    ``part_filters`` (2, C_in, kh, kw) are the two original filters whose sum was planted
    (None where the planting does not know them)."""

    layer: str
    channel: int
    source_channels: tuple[int, int]
    classes: tuple[tuple[int, ...], tuple[int, ...]]
    parts_fn: Callable[[Tensor], Tensor]
    part_filters: Tensor | None = None


@dataclass(frozen=True)
class Context:
    """What a method or metric may read. ``model`` is in eval mode and is never mutated.

    ``fit`` is the data methods fit on (reference samples index into it); ``heldout``
    is the data metrics evaluate on; ``stats`` are the capture statistics of ``fit`` at
    ``layer``; ``planted`` maps a planted channel index to its ground truth; ``memo`` is the
    run's memory of shared per-target values (:mod:`benchmark.core.memo`; contexts copied
    with ``dataclasses.replace`` share it).
    """

    model: nn.Module
    model_name: str
    layer: str
    fit: "ImageDataset"
    heldout: "ImageDataset"
    stats: "LayerStats"
    device: torch.device = torch.device("cpu")
    batch_size: int = 64
    seed: int = 0
    cache: "Cache | None" = None
    planted: Mapping[int, PlantedTruth] = field(default_factory=dict)
    memo: RunMemo = field(default_factory=RunMemo, compare=False, repr=False)


@dataclass(frozen=True)
class Column:
    """One number a metric reports: its direction and bounds (None = unbounded).

    ``optional``: the column may be absent from a score where it does not apply to that
    split (e.g. a gating-only column on a surgery split); the tables show "—" there."""

    name: str
    higher_is_better: bool | None
    bounds: tuple[float | None, float | None] = (None, None)
    optional: bool = False

