"""Output fidelity of a rewritten model (Hesse et al., CVPR-W 2025: the surgery leaves the
network's function unchanged, checked there with ``torch.isclose`` on one input;
DESIGN.md, "output fidelity").

Definition. On every held-out image, with ``f`` the original model (``context.model``)
and ``g`` the split's rewritten copy (``split.model``):

    max_abs_logit_diff = max over images and classes of |g(x) - f(x)|
    top1_agreement     = fraction of images with argmax g(x) == argmax f(x)

Extra: ``mean_abs_logit_diff`` (mean over images and classes) and ``images``. For an exact
surgery the first is float round-off and the second 1. Splits without a rewritten model
(gating methods) are not applicable; so are logits with NaN or inf in either model ("not
applicable: non-finite values"): a NaN difference is never a zero difference, and
agreement of an argmax over NaN is meaningless.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

import torch

from benchmark.core.finite import bad_rows
from benchmark.core.plugins import Metric
from benchmark.core.registry import METRICS
from benchmark.core.types import Column, Context, NotApplicable, Split
from metrics._common import batches


@METRICS.register("output_fidelity")
@dataclass(frozen=True)
class OutputFidelity(Metric):
    """Logit difference and top-1 agreement of the rewritten model vs the original."""

    requires: ClassVar[frozenset[str]] = frozenset({"surgery"})  # does not apply without it

    columns: ClassVar[tuple[Column, ...]] = (
        Column("max_abs_logit_diff", False, (0.0, None)),
        Column("top1_agreement", True, (0.0, 1.0)),
    )
    titles: ClassVar[Mapping[str, str]] = {"max_abs_logit_diff": "Max logit change", "top1_agreement": "Top-1 agreement"}
    scope: ClassVar[str] = "split"
    calibrated_columns: ClassVar[tuple[str, ...]] = ()
    not_calibrated: ClassVar[str] = "fidelity, not separation: every trivial split is exact by construction"

    @property
    def label(self) -> str:
        return "output_fidelity"

    def score(self, split: Split, context: Context) -> dict[str, float]:
        if split.model is None:
            raise NotApplicable(f"{split.method} does not rewrite the model")
        n = len(context.heldout)
        if n == 0:
            raise NotApplicable("the held-out set is empty")
        max_diff, abs_sum, agree, values = 0.0, 0.0, 0, 0
        non_finite = {"original": 0, "rewritten": 0}
        with torch.no_grad():
            for images, _labels in batches(context.heldout, torch.arange(n), context.batch_size, context.device):
                f = context.model(images).double()
                g = split.model(images).double()
                if f.shape != g.shape:
                    raise RuntimeError(f"{split.method}: rewritten model returns {tuple(g.shape)}, the original {tuple(f.shape)}")
                non_finite["original"] += int(bad_rows(f).sum())
                non_finite["rewritten"] += int(bad_rows(g).sum())
                if any(non_finite.values()):
                    continue
                diff = (g - f).abs()
                max_diff = max(max_diff, float(diff.max()))
                abs_sum += float(diff.sum())
                values += diff.numel()
                agree += int((g.argmax(1) == f.argmax(1)).sum())
        if any(non_finite.values()):
            which = ", ".join(f"the {k} model's logits on {v} of {n} images" for k, v in non_finite.items() if v)
            raise NotApplicable(f"non-finite values: NaN or inf in {which}")
        return {
            "max_abs_logit_diff": max_diff,
            "top1_agreement": agree / n,
            "mean_abs_logit_diff": abs_sum / values,
            "images": float(n),
        }
