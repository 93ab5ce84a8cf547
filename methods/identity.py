"""The identity baseline: k = 1, the virtual neuron is the channel itself (gate 1).

It disentangles nothing, so it calibrates both ends of every metric: the floor of the
separation metrics (embedding separation, planted recovery of two parts) and the ceiling
of the fidelity metrics (its recomposition and output fidelity are exact by construction).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from benchmark.core.plugins import Method
from benchmark.core.registry import METHODS
from benchmark.core.types import Context, Split, Target
from methods._gating import gated_split
from methods._pooled import reference_ids


@METHODS.register("identity")
@dataclass(frozen=True)
class Identity(Method):
    """The channel itself as its only virtual neuron (k = 1); references: its top images by max activation.

    Calibrates: the 'no disentanglement' floor of separation metrics and the exact
    ceiling of fidelity metrics.
    """

    role: ClassVar[str] = "no_op"

    n_ref: int = 100

    def __post_init__(self) -> None:
        if self.n_ref < 1:
            raise ValueError(f"n_ref must be >= 1, got {self.n_ref}")

    def fit(self, context: Context, target: Target) -> Split:
        ids = reference_ids(context, target, self.n_ref, by="max")

        def gates(images: Tensor) -> Tensor:
            return torch.ones(images.shape[0], 1, device=images.device)

        return gated_split(target=target, method="identity", model=context.model, gates_fn=gates, k=1,
                           reference_ids=[ids.tolist()], info={"note": "no split: the channel itself"}, memo=context.memo)
