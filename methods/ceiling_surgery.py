"""The surgery family's ceiling on a planted channel: weight surgery with the TRUE input masks.

A planted channel's filter is the sum of two original filters, ``W = W_0 + W_1``
(:mod:`benchmark.planting.merge`). A weight surgery (:mod:`methods._surgery`, Hesse et al.
2025) can only give each input channel j to one virtual neuron (or to the shared set); the
truth says which: j goes to the part whose filter contributes more energy through it on the
channel's fit references, ``argmax_q sum_n sum_hw conv(x_j, W_q[j])^2``, with no shared set.
Virtual neuron i then keeps the planted filter on its input channels (and the bias), exactly
as an ARV surgery with those sets would. Where the two parts read disjoint input channels
this IS the planted decomposition (recovery 1); where they read the same inputs no binary
mask can separate them and the ceiling is below 1. It is a reference row (DESIGN.md, "family
ceilings"), not a method, and needs the planted ground truth with its part filters.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.core.plugins import Method
from benchmark.core.registry import METHODS
from benchmark.core.types import Context, NotApplicable, Split, Target
from benchmark.engine.layers import get_layer, layer_activations
from methods._pooled import reference_ids
from methods._surgery import DisentangledConv, disentangle_model, surgery_fns
from methods.oracle import planted_truth

NAME = "ceiling_surgery"


@METHODS.register(NAME)
@dataclass(frozen=True)
class SurgeryCeiling(Method):
    """Surgery ceiling: input channels split by the planted part filters (planted channels only)."""

    role: ClassVar[str] = "ceiling"

    requires: ClassVar[frozenset[str]] = frozenset({"planted_truth"})  # does not apply without it

    n_ref: int = 100

    def __post_init__(self) -> None:
        if self.n_ref < 1:
            raise ValueError(f"n_ref must be >= 1, got {self.n_ref}")

    def fit(self, context: Context, target: Target) -> Split:
        truth = planted_truth(context, target)
        if truth.part_filters is None:
            raise NotApplicable(f"{NAME}: the planted truth of channel {target.channel} holds no part filters")
        conv = get_layer(context.model, target.layer)
        if not isinstance(conv, nn.Conv2d):
            raise NotApplicable(f"{NAME} rewrites a Conv2d; {target.layer!r} is {type(conv).__name__}")
        ids = reference_ids(context, target, self.n_ref, by="max")
        energy = torch.zeros(2, conv.in_channels, dtype=torch.float64)
        with torch.no_grad():
            for start in range(0, ids.numel(), context.batch_size):
                images = context.fit.images(ids[start:start + context.batch_size]).to(context.device)
                x = layer_activations(context.model, target.layer, images, side="input")
                for q in range(2):
                    w = truth.part_filters[q][:, None].to(x)  # (C_in, 1, kh, kw): one filter per input channel
                    maps = F.conv2d(x, w, None, conv.stride, conv.padding, conv.dilation, groups=x.shape[1])
                    energy[q] += maps.double().pow(2).sum(dim=(0, 2, 3)).cpu()
        owner = torch.argmax(energy, dim=0)  # ties -> part 0
        model = disentangle_model(context.model, target.layer, target.channel, owner, 2)
        module = model.get_submodule(target.layer)
        assert isinstance(module, DisentangledConv)
        virtual_fn, residual_fn = surgery_fns(model, target.layer, module)
        with torch.no_grad():
            peaks = torch.cat([virtual_fn(context.fit.images(ids[s:s + context.batch_size]).to(context.device))
                               .flatten(2).clamp(min=0).sum(-1).cpu() for s in range(0, ids.numel(), context.batch_size)])
        groups = peaks.argmax(dim=1)
        concepts = truth.classes if all(truth.classes) else None
        return Split(target=target, method=NAME, k=2, recomposition="surgery", virtual_fn=virtual_fn,
                     residual_fn=residual_fn, model=model, concepts=concepts,
                     reference_ids=tuple(tuple(ids[groups == i].tolist()) for i in range(2)),
                     info={"sizes": (int((owner == 0).sum()), int((owner == 1).sum())),
                           "note": "surgery with the planted input masks"})
