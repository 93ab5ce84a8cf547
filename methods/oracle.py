"""The oracle: on a planted channel (benchmark.planting.merge), the planted parts themselves.

Virtual neuron i = part i of :class:`benchmark.core.types.PlantedTruth` (the original filter i
applied to the layer input), so the virtual neurons sum to the planted channel exactly
(gating recomposition: orig = sum_i virtual_i). Reference ids: the channel's top ``n_ref``
fit images by max activation, each given to the part with the larger positive spatial sum on it.

It calibrates the ceiling of the planted track: no method can recover the parts better. It is
also the dictionary family's ceiling: soft input masks ``m_qj = W_q[j] / W[j]`` (what an NMF of
the contributions could find) or one dictionary atom per part reproduce the parts exactly;
``ceiling_gating`` and ``ceiling_surgery`` are the ceilings of the other two families.
It does not apply to channels without planted ground truth.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from benchmark.core.plugins import Method
from benchmark.core.registry import METHODS
from benchmark.core.types import Context, NotApplicable, PlantedTruth, Split, Target
from methods._pooled import reference_ids


def planted_truth(context: Context, target: Target) -> PlantedTruth:
    """The ground truth of the target channel, or NotApplicable."""
    truth = context.planted.get(target.channel)
    if truth is None or truth.layer != target.layer:
        planted = sorted(context.planted)
        raise NotApplicable(
            f"channel {target.channel} of {target.layer!r} is not planted; the oracle needs planted ground "
            f"truth (planted channels here: {planted or 'none'})")
    return truth


@METHODS.register("oracle")
@dataclass(frozen=True)
class Oracle(Method):
    """The planted parts as virtual neurons (ground truth; planted channels only).

    Calibrates: the best achievable recovery of planted parts (the planted track's ceiling).
    """

    role: ClassVar[str] = "ceiling"

    requires: ClassVar[frozenset[str]] = frozenset({"planted_truth"})  # does not apply without it

    n_ref: int = 100

    def __post_init__(self) -> None:
        if self.n_ref < 1:
            raise ValueError(f"n_ref must be >= 1, got {self.n_ref}")

    def fit(self, context: Context, target: Target) -> Split:
        truth = planted_truth(context, target)
        ids = reference_ids(context, target, self.n_ref, by="max")
        parts_fn = truth.parts_fn
        sums = []
        with torch.no_grad():
            for start in range(0, ids.numel(), context.batch_size):
                images = context.fit.images(ids[start:start + context.batch_size]).to(context.device)
                # positive spatial sum: the same ownership rule as metrics/planted_recovery.py
                sums.append(parts_fn(images).clamp(min=0).sum(dim=(2, 3)).cpu())
        owner = torch.cat(sums).argmax(dim=1)
        groups = [ids[owner == i].tolist() for i in range(2)]

        def virtual(images: Tensor) -> Tensor:
            return parts_fn(images)

        concepts = truth.classes if all(truth.classes) else None
        return Split(
            target=target, method="oracle", k=2, recomposition="gating", virtual_fn=virtual,
            reference_ids=tuple(tuple(g) for g in groups), concepts=concepts,
            info={"source_channels": list(truth.source_channels), "note": "planted ground truth"},
        )
