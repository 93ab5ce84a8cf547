"""The class-gate baseline: hard gating by which of the target's concepts the model predicts.

For an image x with logits z(x) and the target's concepts C_1..C_k (class sets, supplied by
the track), the score of concept i is max_{c in C_i} z_c(x) and the gate is one-hot on the
concept with the largest score (ties -> the first concept). Virtual neuron i =
[i = argmax] * orig(x), so the split recomposes the channel exactly (gating). Reference
samples: the channel's top ``n_ref`` fit images by max activation, each given to its gate.

It is the labels handed over: no attribution, no clustering, only the network's own
decision between the two concepts. A method that does not beat ``class_gate`` on a track
with concepts has learnt nothing beyond the labels it was given. It does not apply to a
target without concepts (the layer track). Not from a paper; the trivial split named in
DESIGN.md ("Calibration").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from benchmark.core.plugins import Method
from benchmark.core.registry import METHODS
from benchmark.core.types import Context, NotApplicable, Split, Target
from benchmark.engine.layers import eval_mode
from methods._gating import gated_split, one_hot_gates
from methods._pooled import reference_ids


def concept_scores(logits_nc: Tensor, concepts: tuple[tuple[int, ...], ...]) -> Tensor:
    """(N, k) score of each concept: the largest logit among its classes."""
    num_classes = logits_nc.shape[1]
    for cs in concepts:
        for c in cs:
            if not 0 <= c < num_classes:
                raise ValueError(f"concept class {c} is out of range: the model has {num_classes} logits")
    return torch.stack([logits_nc[:, list(cs)].max(dim=1).values for cs in concepts], dim=1)


@METHODS.register("class_gate")
@dataclass(frozen=True)
class ClassGate(Method):
    """Hard gate by the larger logit among the target's concept classes (needs concepts).

    Calibrates: what the concept labels alone buy; a method should beat it.
    """

    role: ClassVar[str] = "label_floor"

    requires: ClassVar[frozenset[str]] = frozenset({"concepts"})  # does not apply without it

    n_ref: int = 100

    def __post_init__(self) -> None:
        if self.n_ref < 1:
            raise ValueError(f"n_ref must be >= 1, got {self.n_ref}")

    def fit(self, context: Context, target: Target) -> Split:
        if not target.concepts or len(target.concepts) < 2:
            raise NotApplicable(
                f"class_gate gates by the target's concept classes; target {target.key} names "
                f"{len(target.concepts or ())} concept(s), it needs at least 2")
        concepts, model, k = target.concepts, context.model, len(target.concepts)

        def gates(images: Tensor) -> Tensor:
            with torch.no_grad(), eval_mode(model):
                logits = model(images)
            return one_hot_gates(concept_scores(logits, concepts).argmax(dim=1), k).to(images.device)

        ids = reference_ids(context, target, self.n_ref, by="max")
        owner = torch.cat([gates(context.fit.images(ids[s:s + context.batch_size]).to(context.device)).argmax(1).cpu()
                           for s in range(0, ids.numel(), context.batch_size)])
        groups = [ids[owner == i].tolist() for i in range(k)]
        return gated_split(target=target, method="class_gate", model=model, gates_fn=gates, k=k,
                           reference_ids=groups, concepts=concepts, info={"note": "gate = argmax concept logit"}, memo=context.memo)
