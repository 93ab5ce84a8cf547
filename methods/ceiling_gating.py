"""The gating family's ceiling on a planted channel: a hard gate by the TRUE owner of each image.

A gating split can only route the whole channel map of an image to one virtual neuron (or
share it by weights); the best it can do on a planted channel is to route every image to the
part that drives it. Here the owner of an image is the planted part with the larger positive
spatial sum (the rule of ``metrics/planted_recovery.py`` and of the oracle's references), and
virtual neuron i = [owner(x) = i] * orig(x). So its assignment ARI is 1 by construction and its
decomposition recovery is the most a gating split can reach: each part is carried only as far
as "the channel, on the images that part owns" explains it. It is a reference row (DESIGN.md,
"family ceilings"), not a method, and needs the planted ground truth.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from benchmark.core.plugins import Method
from benchmark.core.registry import METHODS
from benchmark.core.types import Context, Split, Target
from methods._gating import gated_split, one_hot_gates
from methods._pooled import reference_ids
from methods.oracle import planted_truth

NAME = "ceiling_gating"


@METHODS.register(NAME)
@dataclass(frozen=True)
class GatingCeiling(Method):
    """Gating ceiling: each image's channel map goes to its true owner part (planted channels only)."""

    role: ClassVar[str] = "ceiling"

    requires: ClassVar[frozenset[str]] = frozenset({"planted_truth"})  # does not apply without it

    n_ref: int = 100

    def __post_init__(self) -> None:
        if self.n_ref < 1:
            raise ValueError(f"n_ref must be >= 1, got {self.n_ref}")

    def fit(self, context: Context, target: Target) -> Split:
        truth = planted_truth(context, target)

        def gates(images: Tensor) -> Tensor:
            with torch.no_grad():
                owner = truth.parts_fn(images).clamp(min=0).sum(dim=(2, 3)).argmax(dim=1)
            return one_hot_gates(owner, 2).to(images.device)

        ids = reference_ids(context, target, self.n_ref, by="max")
        owner = torch.cat([gates(context.fit.images(ids[s:s + context.batch_size]).to(context.device)).argmax(1).cpu()
                           for s in range(0, ids.numel(), context.batch_size)])
        concepts = truth.classes if all(truth.classes) else None
        return gated_split(target=target, method=NAME, model=context.model, gates_fn=gates, k=2,
                           reference_ids=[ids[owner == i].tolist() for i in range(2)], concepts=concepts,
                           info={"note": "gating by the planted owner of each image"}, memo=context.memo)
