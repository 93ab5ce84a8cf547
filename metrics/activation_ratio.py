"""Activation ratios of virtual neurons on concept images (Hesse et al., CVPR-W 2025,
arXiv 2504.12939; ``get_results.py`` of github.com/visinf/disentangle-channels).

Definition. For each concept i (a class set) take the held-out images of its classes and
keep those on which the target channel matters in the ORIGINAL model: relative positive
attribution ``R_c(n) >= tau`` (Input x Gradient of the layer output w.r.t. the true-class
logit, clamped >= 0 per position before the spatial sum, divided by the same summed over
all channels; see :mod:`metrics._common`). On every kept image n, with ``o(n)`` the signed
spatial sum of the original channel and ``v_j(n)`` that of virtual neuron j,

    r_ij = mean over kept images n of concept i of v_j(n) / o(n).

Images with ``|o(n)| <= eps`` are dropped (the ratio is undefined there; counted).

Alignment of virtual neurons to concepts: when the split names a concept per virtual
neuron (``split.concepts``), neuron i belongs to concept i. Otherwise (the target's
concepts, e.g. a clustering method) each concept is matched to a different virtual neuron
by the assignment that maximises the sum of matched r_ij (Hungarian algorithm); with fewer
virtual neurons than concepts some concepts stay unmatched.

Columns: ``own`` = mean over matched concepts i of r_{i,m(i)} (ideal 1); ``cross`` = mean of
r_ij over every (concept i, virtual neuron j != m(i)) pair (ideal 0); ``gap = own - cross``.
A split with k = 1 (no split at all) therefore scores own = cross = 1, gap = 0.
Extra keys per concept i: ``own_c{i}``, ``cross_c{i}``, ``ratio_v{j}_c{i}``, ``matched_c{i}``
(the virtual neuron, -1 if unmatched), ``kept_c{i}`` / ``images_c{i}`` / ``near_zero_c{i}``
(kept images, images of the concept, images dropped for ``|o| <= eps``), and
``residual_c{i}`` (mean res/o) for surgery splits.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from benchmark.registry import METRICS
from benchmark.types import Column, Context, NotApplicable, Split
from metrics._common import batches, original_with_attribution, spatial_sum, split_concepts


@METRICS.register("activation_ratio")
@dataclass(frozen=True)
class ActivationRatio:
    """Own/cross activation ratios of virtual neurons on concept images (Hesse et al. 2025)."""

    tau: float = 0.03
    eps: float = 1e-6

    columns: ClassVar[tuple[Column, ...]] = (
        Column("own", None),
        Column("cross", False),
        Column("gap", True),
    )
    scope: ClassVar[str] = "split"

    def __post_init__(self) -> None:
        if not 0.0 <= self.tau <= 1.0:
            raise ValueError(f"tau must be in [0, 1], got {self.tau}")
        if self.eps < 0:
            raise ValueError(f"eps must be >= 0, got {self.eps}")

    @property
    def label(self) -> str:
        return "activation_ratio"

    def score(self, split: Split, context: Context) -> dict[str, float]:
        concepts = split_concepts(split)
        if concepts is None:
            raise NotApplicable("activation_ratio needs concepts (class sets): neither the split nor its target names any")
        if split.concepts is not None and len(split.concepts) != split.k:
            raise ValueError(f"split.concepts has {len(split.concepts)} entries for k={split.k} virtual neurons")
        m, k = len(concepts), split.k
        ratios = np.zeros((m, k))
        out: dict[str, float] = {}
        for i, classes in enumerate(concepts):
            ratio_sum, res_sum, kept, near_zero, total = self._concept(split, context, classes)
            out[f"images_c{i}"], out[f"kept_c{i}"], out[f"near_zero_c{i}"] = float(total), float(kept), float(near_zero)
            if kept == 0:
                raise NotApplicable(
                    f"no held-out image of concept {i} (classes {list(classes)}; {total} images) has relative "
                    f"positive attribution >= tau={self.tau} for channel {split.target.channel} with |orig| > {self.eps}")
            ratios[i] = ratio_sum / kept
            if res_sum is not None:
                out[f"residual_c{i}"] = float(res_sum / kept)
        if split.concepts is not None:
            match = {i: i for i in range(m)}
        else:
            rows, cols = linear_sum_assignment(ratios, maximize=True)
            match = {int(r): int(c) for r, c in zip(rows, cols)}
        own_values, cross_values = [], []
        for i in range(m):
            j_own = match.get(i, -1)
            others = [float(ratios[i, j]) for j in range(k) if j != j_own]
            out[f"matched_c{i}"] = float(j_own)
            if j_own >= 0:
                own_values.append(float(ratios[i, j_own]))
                out[f"own_c{i}"] = float(ratios[i, j_own])
            if others:
                out[f"cross_c{i}"] = float(np.mean(others))
            cross_values.extend(others)
            for j in range(k):
                out[f"ratio_v{j}_c{i}"] = float(ratios[i, j])
        if not cross_values:
            raise NotApplicable("activation_ratio needs a cross ratio: one concept and one virtual neuron give none")
        own, cross = float(np.mean(own_values)), float(np.mean(cross_values))
        out.update(own=own, cross=cross, gap=own - cross)
        return out

    def _concept(self, split: Split, context: Context, classes: tuple[int, ...]):
        """Sums of per-image ratios over the kept images of one concept, and the counts."""
        idx = context.heldout.indices_of(classes)
        ratio_sum = np.zeros(split.k)
        res_sum = 0.0 if split.residual_fn is not None else None
        kept = near_zero = 0
        for images, labels in batches(context.heldout, idx, context.batch_size, context.device):
            orig_map, share = original_with_attribution(
                context.model, split.target.layer, split.target.channel, images, labels)
            orig = spatial_sum(orig_map).double()
            attributed = share >= self.tau
            nonzero = orig.abs() > self.eps
            near_zero += int((attributed & ~nonzero).sum())
            keep = attributed & nonzero
            if not bool(keep.any()):
                continue
            with torch.no_grad():
                v = spatial_sum(split.activations(images[keep])).double()  # (n, k)
                ratio_sum += (v / orig[keep, None]).sum(0).cpu().numpy()
                if res_sum is not None:
                    res = spatial_sum(split.residual(images[keep])).double()
                    res_sum += float((res / orig[keep]).sum())
            kept += int(keep.sum())
        return ratio_sum, res_sum, kept, near_zero, int(idx.numel())
