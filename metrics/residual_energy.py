"""Size of the residual of a surgery or dictionary split (Hesse et al., CVPR-W 2025: "the
residual stays small"; DESIGN.md, "residual energy").

Surgery splits recompose the channel as ``orig = sum_i d_i - (k-1) * res``; the residual
``res`` carries what both virtual neurons share. Dictionary splits recompose it as
``orig = sum_i v_i + res``; there ``res`` is what no atom group carries (the SAE's
reconstruction error and decoder bias, or the conv bias of an NMF split). On held-out images (those of the split's
concepts when it has any, else all), with ``sum_hw`` the spatial sum,

    residual_ratio  = sum_n |sum_hw res(n)| / sum_n |sum_hw orig(n)|      (ratio of sums)
    residual_median = median over images n of |sum_hw res(n)| / |sum_hw orig(n)|
    energy          = sum over images and positions of res^2 / the same of orig^2

where ``orig`` is the target channel of the ORIGINAL model. A mean of per-image ratios (the
previous ``residual_ratio``) is dominated by images on which the channel is near 0 (one
planted target: mean 6.4, max 468, median 1.26), so it is replaced by the ratio of sums
(every image weighted by how much the channel fires on it) and the median (robust per-image
view). Images with ``|sum_hw orig| <= eps`` are left out of the median (counted in
``near_zero``). All lower is better. Splits without a residual (gating methods) are not
applicable. The ARV paper reports the residual qualitatively ("stays small"); the per-image
ratio res/o is its get_results.py quantity.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

import numpy as np
import torch

from benchmark.core.plugins import Metric
from benchmark.core.registry import METRICS
from benchmark.core.types import Column, Context, NotApplicable, Split
from metrics._common import batches, concept_indices, original_channel, spatial_sum, split_concepts


@METRICS.register("residual_energy")
@dataclass(frozen=True)
class ResidualEnergy(Metric):
    """Relative size of a split's residual (surgery, dictionary): spatial-sum and energy ratios."""

    requires: ClassVar[frozenset[str]] = frozenset({"residual"})  # does not apply without it

    eps: float = 1e-6

    columns: ClassVar[tuple[Column, ...]] = (
        Column("residual_ratio", False, (0.0, None)),
        Column("residual_median", False, (0.0, None)),
        Column("energy", False, (0.0, None)),
    )
    titles: ClassVar[Mapping[str, str]] = {"residual_ratio": "Residual ratio", "residual_median": "Residual (median)",
                                           "energy": "Residual energy"}
    scope: ClassVar[str] = "split"
    label_free: ClassVar[bool] = True  # needs no planted truth: ranked by benchmark.evaluation.meta_evaluation
    calibrated_columns: ClassVar[tuple[str, ...]] = ()
    not_calibrated: ClassVar[str] = "size of a residual, not a separation score (gating splits have none)"

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
        ratios: list[torch.Tensor] = []
        res_abs, orig_abs, near_zero = 0.0, 0.0, 0
        res_energy, orig_energy = 0.0, 0.0
        with torch.no_grad():
            for images, _labels in batches(context.heldout, idx, context.batch_size, context.device):
                orig = original_channel(context, split, images).double()
                res = split.residual(images).double()  # type: ignore[union-attr]  # surgery splits have a residual
                if res.shape != orig.shape:
                    raise RuntimeError(f"{split.method}: residual has shape {tuple(res.shape)}, the channel {tuple(orig.shape)}")
                o, r = spatial_sum(orig).abs(), spatial_sum(res).abs()
                ok = o > self.eps
                ratios.append((r[ok] / o[ok]).cpu())
                res_abs += float(r.sum())
                orig_abs += float(o.sum())
                near_zero += int((~ok).sum())
                res_energy += float((res ** 2).sum())
                orig_energy += float((orig ** 2).sum())
        per_image = torch.cat(ratios)
        if per_image.numel() == 0 or orig_energy == 0.0 or orig_abs == 0.0:
            raise NotApplicable(f"the original channel is (near) zero on all {idx.numel()} held-out images")
        return {
            "residual_ratio": res_abs / orig_abs,
            "residual_median": float(np.median(per_image.numpy())),
            "residual_mean_ratio": float(per_image.mean()),
            "energy": res_energy / orig_energy,
            "images": float(idx.numel()),
            "near_zero": float(near_zero),
        }
