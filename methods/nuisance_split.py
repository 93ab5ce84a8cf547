"""The nuisance-split baseline (synthetic world only): hard gating by a class-irrelevant factor.

In the synthetic world (``benchmark.sources.world``) every image's object colour is drawn
uniformly from 8 hue bins independently of its class, so the parity of the colour bin
splits every class in two halves that differ in nothing the network should use. The gate
is read from the pixels, so it works on any image (held-out, feature visualisations):

    u = the image in [0, 1] RGB; chroma s = max_c u - min_c u per pixel;
    hue angle = atan2(sum w * sqrt(3)/2 (g - b), sum w * (r - (g + b) / 2)), w = s^2 [s > 0.2]
    (the object is the only saturated region: the background is grey with a tint < 0.06);
    bin = floor(hue / 2 pi * 8); gate = bin mod 2.

On 2,000 validation images of world seed 0 the estimated bin equals the generating colour
factor on every image (checked in tests/methods/test_trivial_baselines.py on fresh images).
Virtual neuron i = [gate = i] * orig, an exact gating recomposition; references: the
channel's top ``n_ref`` fit images by max activation, each given to its gate.

It calibrates: a metric that rewards a split by a nuisance factor as "disentangled" (both
halves look alike to the network and to any class-level judge) is broken. It does not
apply to other datasets (no known class-irrelevant factor). Not from a paper; the trivial
split named in DESIGN.md ("Calibration").
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from benchmark.core.plugins import Method
from benchmark.core.registry import METHODS
from benchmark.core.types import Context, NotApplicable, Split, Target
from benchmark.sources.datasets import ImageDataset, Subset
from methods._gating import gated_split, one_hot_gates
from methods._pooled import reference_ids

MIN_CHROMA = 0.2  # pixels less saturated than this are background


def _base(dataset: ImageDataset) -> ImageDataset:
    while isinstance(dataset, Subset):
        dataset = dataset.base
    return dataset


def colour_bins(images_unit: Tensor, num_bins: int) -> Tensor:
    """(N,) hue bin of the most saturated region of each [0, 1] RGB image (module docstring)."""
    if images_unit.dim() != 4 or images_unit.shape[1] != 3:
        raise ValueError(f"colour_bins needs RGB images (N, 3, H, W), got {tuple(images_unit.shape)}")
    u = images_unit.detach().float()
    chroma = u.max(dim=1).values - u.min(dim=1).values
    w = chroma.square() * (chroma > MIN_CHROMA)
    r, g, b = u[:, 0], u[:, 1], u[:, 2]
    a = ((r - 0.5 * (g + b)) * w).sum(dim=(1, 2))
    c = ((math.sqrt(3) / 2 * (g - b)) * w).sum(dim=(1, 2))
    hue = torch.remainder(torch.atan2(c, a) / (2 * math.pi), 1.0)
    return (hue * num_bins).floor().long().clamp(0, num_bins - 1)


@METHODS.register("nuisance_split")
@dataclass(frozen=True)
class NuisanceSplit(Method):
    """Hard gate by the parity of the object's colour bin, a class-irrelevant factor (synthetic world only).

    Calibrates: a split by a nuisance factor must score as 'no separation'.
    """

    role: ClassVar[str] = "no_op"

    requires: ClassVar[frozenset[str]] = frozenset({"synthetic_world"})  # does not apply without it

    n_ref: int = 100

    def __post_init__(self) -> None:
        if self.n_ref < 1:
            raise ValueError(f"n_ref must be >= 1, got {self.n_ref}")

    def fit(self, context: Context, target: Target) -> Split:
        from benchmark.sources.world.classes import COLOURS
        from benchmark.sources.world.dataset import SyntheticWorld

        base = _base(context.fit)
        if not isinstance(base, SyntheticWorld):
            raise NotApplicable(
                f"nuisance_split gates by the synthetic world's colour factor, which is independent of the "
                f"class there; the fit data here is {type(base).__name__}, where no class-irrelevant factor is known")
        dataset, bins = context.fit, len(COLOURS)

        def gates(images: Tensor) -> Tensor:
            parity = colour_bins(dataset.to_unit_range(images), bins) % 2
            return one_hot_gates(parity, 2).to(images.device)

        ids = reference_ids(context, target, self.n_ref, by="max")
        owner = gates(context.fit.images(ids)).argmax(dim=1).cpu()
        groups = [ids[owner == i].tolist() for i in range(2)]
        return gated_split(target=target, method="nuisance_split", model=context.model, gates_fn=gates, k=2,
                           reference_ids=groups, info={"note": "gate = colour bin parity"}, memo=context.memo)
