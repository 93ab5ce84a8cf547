"""Size of the shared residual of a surgery split (Hesse et al., CVPR-W 2025: "the residual
stays small"; DESIGN.md, "residual energy").

Surgery splits recompose the channel as ``orig = sum_i d_i - (k-1) * res``; the residual
``res`` carries what both virtual neurons share. On held-out images (those of the split's
concepts when it has any, else all), with ``sum_hw`` the spatial sum,

    residual_ratio = mean over images n of |sum_hw res(n)| / |sum_hw orig(n)|
    energy         = sum over images and positions of res^2 / the same of orig^2

where ``orig`` is the target channel of the ORIGINAL model. Images with
``|sum_hw orig| <= eps`` are left out of ``residual_ratio`` (counted in ``near_zero``).
Both lower is better. Splits without a residual (gating methods) are not applicable.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from benchmark.registry import METRICS
from benchmark.types import Column, Context, NotApplicable, Split
from metrics._common import batches, concept_indices, original_channel, spatial_sum, split_concepts


@METRICS.register("residual_energy")
@dataclass(frozen=True)
class ResidualEnergy:
    """Relative size of a surgery split's residual: spatial-sum ratio and energy ratio."""

    eps: float = 1e-6

    columns: ClassVar[tuple[Column, ...]] = (
        Column("residual_ratio", False, (0.0, None)),
        Column("energy", False, (0.0, None)),
    )
    scope: ClassVar[str] = "split"

    def __post_init__(self) -> None:
        if self.eps < 0:
            raise ValueError(f"eps must be >= 0, got {self.eps}")

    @property
    def label(self) -> str:
        return "residual_energy"

    def score(self, split: Split, context: Context) -> dict[str, float]:
        if split.residual_fn is None:
            raise NotApplicable(f"{split.method} has no residual (recomposition {split.recomposition!r})")
        idx = concept_indices(context.heldout, split_concepts(split))
        if idx.numel() == 0:
            raise NotApplicable("no held-out images of the split's concepts")
        ratio_sum, ratio_n, near_zero = 0.0, 0, 0
        res_energy, orig_energy = 0.0, 0.0
        with torch.no_grad():
            for images, _labels in batches(context.heldout, idx, context.batch_size, context.device):
                orig = original_channel(context, split, images).double()
                res = split.residual(images).double()
                if res.shape != orig.shape:
                    raise RuntimeError(f"{split.method}: residual has shape {tuple(res.shape)}, the channel {tuple(orig.shape)}")
                o, r = spatial_sum(orig).abs(), spatial_sum(res).abs()
                ok = o > self.eps
                ratio_sum += float((r[ok] / o[ok]).sum())
                ratio_n += int(ok.sum())
                near_zero += int((~ok).sum())
                res_energy += float((res ** 2).sum())
                orig_energy += float((orig ** 2).sum())
        if ratio_n == 0 or orig_energy == 0.0:
            raise NotApplicable(f"the original channel is (near) zero on all {idx.numel()} held-out images")
        return {
            "residual_ratio": ratio_sum / ratio_n,
            "energy": res_energy / orig_energy,
            "images": float(idx.numel()),
            "near_zero": float(near_zero),
        }
