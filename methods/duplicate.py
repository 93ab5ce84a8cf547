"""The duplicate baseline: k virtual neurons, each an exact copy of the channel divided by k.

Virtual neuron i = orig / k for every i (constant gates w_i = 1/k), so the virtual neurons
recompose the channel exactly (gating: sum_i w_i * orig = orig) while separating nothing:
every virtual neuron responds to every image in the same proportion. Each copy lists the
same reference samples (the channel's top ``n_ref`` fit images by max activation).

It calibrates the separation metrics from the other side than ``identity``: it has k = 2
virtual neurons like the real methods, so a metric that scores ``duplicate`` as
disentangled (e.g. a correlation with planted parts that rewards any copy of the channel)
is measuring the channel, not the split. Not from a paper; the trivial split named in
DESIGN.md ("Calibration").
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


@METHODS.register("duplicate")
@dataclass(frozen=True)
class Duplicate(Method):
    """k copies of the channel divided by k (recomposes exactly, separates nothing).

    Calibrates: a separation metric must score it as 'no separation'.
    """

    role: ClassVar[str] = "no_op"

    k: int = 2
    n_ref: int = 100

    def __post_init__(self) -> None:
        if self.k < 2:
            raise ValueError(f"duplicate needs k >= 2, got k={self.k} (use 'identity' for k=1)")
        if self.n_ref < 1:
            raise ValueError(f"n_ref must be >= 1, got {self.n_ref}")

    def fit(self, context: Context, target: Target) -> Split:
        ids = reference_ids(context, target, self.n_ref, by="max").tolist()
        k = self.k

        def gates(images: Tensor) -> Tensor:
            return torch.full((images.shape[0], k), 1.0 / k, device=images.device)

        return gated_split(target=target, method="duplicate", model=context.model, gates_fn=gates, k=k,
                           reference_ids=[ids] * k, info={"note": f"{k} copies of orig/{k}"}, memo=context.memo)
