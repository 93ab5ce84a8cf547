"""Validity filter of planted channels: does the network really use the planted channel
for BOTH of its concepts? Applied to every candidate before it enters the planted track;
the measures and the reasons of every rejection are recorded in ``run.json``.

Measures of a planted channel a with concepts C_0, C_1 (class sets of its two parts):

* ``response_c{i}``: mean spatially summed response of a over the held-out images of C_i;
* ``relevance_c{i}``: share of the held-out images of C_i on which a passes the relevance
  filter of Hesse et al. 2025 (step 1): A_a(n) >= tau * sum_c max(A_c(n), 0) with A_c(n) the
  spatially summed Input x Gradient of the layer output for the true-class logit (the
  capture statistics' ``importance_counts``; tau = ``capture.tau``);
* ``part_share_p{q}``: share of a's top ``n_ref`` fit references (by max activation) that
  part q owns (the larger positive spatial sum, the rule of the oracle and of
  metrics/planted_recovery.py).

* ``accuracy_kept``: the fine-tuned network's held-out accuracy over the original's.

A candidate is valid iff every response > ``min_response``, every relevance share >=
``min_relevance_pass``, every part share >= ``min_part_share`` and ``accuracy_kept`` >=
``min_accuracy_kept``.

How the defaults were chosen (fit split only, world seed 0, never the held-out images the
track scores): on the fit split, the 22 unplanted source channels of the candidates of
``blocks.2.conv2`` and ``blocks.1.conv2`` (model seed 0) pass the relevance filter on their
own top class with a bimodal share: 11 of 22 at <= 0.06, 10 of 22 at >= 0.63 (median 0.06),
nothing in between but 0.2. ``min_relevance_pass = 0.5`` separates the two modes: a planted
channel must be used for each concept as the channels that are used for their class are.
``min_response = 0``: with centred parts (:func:`benchmark.planting.merge.plant` ``offsets``) the
channel must respond to each concept above its average. ``min_part_share = 0.2`` (the
issue's suggestion): a reference set with under a fifth of one part cannot show a method
two concepts. ``min_accuracy_kept = 0.5``: a network the fine-tuning broke (on the real
track's mid layers it fell to chance, 1/16, from 0.57) "uses" its planted channel for
nothing; the synthetic world's fine-tuned models keep 0.68-1.0 of their accuracy, the real
head layers 0.91-0.97, so the rule removes only broken networks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from benchmark.core.types import PlantedTruth
from benchmark.engine.layer_stats import LayerStats
from benchmark.sources.datasets import ImageDataset


@dataclass(frozen=True)
class ValidityRule:
    """Thresholds of the validity filter (module docstring)."""

    min_response: float = 0.0
    min_relevance_pass: float = 0.5
    min_part_share: float = 0.2
    min_accuracy_kept: float = 0.5
    n_ref: int = 100

    def __post_init__(self) -> None:
        for name in ("min_relevance_pass", "min_part_share", "min_accuracy_kept"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.n_ref < 1:
            raise ValueError(f"n_ref must be >= 1, got {self.n_ref}")


def concept_measures(stats: LayerStats, channel: int, concepts) -> dict[str, float]:
    """``response_c{i}`` and ``relevance_c{i}`` of ``channel`` from capture statistics."""
    if stats.importance_counts is None:
        raise ValueError("the validity filter needs statistics captured with importance counters (tau set)")
    out = {}
    for i, classes in enumerate(concepts):
        idx = torch.as_tensor(list(classes), dtype=torch.long)
        n = int(stats.class_counts[idx].sum())
        if n == 0:
            raise ValueError(f"no held-out images of concept {i} (classes {list(classes)})")
        out[f"response_c{i}"] = float(stats.output_sum[idx, channel].sum()) / n
        out[f"relevance_c{i}"] = float(stats.importance_counts[idx, channel].sum()) / n
        out[f"images_c{i}"] = float(n)
    return out


def part_shares(truth: PlantedTruth, fit_stats: LayerStats, fit: ImageDataset, n_ref: int,
                batch_size: int = 256, device: torch.device | str = "cpu") -> dict[str, float]:
    """``part_share_p{q}``: share of the top ``n_ref`` fit references that part q owns."""
    ids = fit_stats.top_max_ids[truth.channel, :n_ref]
    sums = []
    with torch.no_grad():
        for start in range(0, ids.numel(), batch_size):
            images = fit.images(ids[start:start + batch_size]).to(device)
            sums.append(truth.parts_fn(images).clamp(min=0).sum(dim=(2, 3)).cpu())
    owner = torch.cat(sums).argmax(dim=1)
    return {f"part_share_p{q}": float((owner == q).float().mean()) for q in range(2)}


def judge(measures: dict[str, float], rule: ValidityRule, concepts) -> list[str]:
    """The reasons a candidate fails the rule (empty: valid)."""
    reasons = []
    for i, classes in enumerate(concepts):
        name = f"concept {i} (classes {list(classes)})"
        if not measures[f"response_c{i}"] > rule.min_response:
            reasons.append(f"{name}: mean held-out response {measures[f'response_c{i}']:.3g} <= {rule.min_response:g}")
        if measures[f"relevance_c{i}"] < rule.min_relevance_pass:
            reasons.append(f"{name}: relevance filter passes {measures[f'relevance_c{i}']:.2f} of its held-out "
                           f"images < {rule.min_relevance_pass:g}")
    for q in range(2):
        share = measures[f"part_share_p{q}"]
        if share < rule.min_part_share:
            reasons.append(f"part {q} owns {share:.2f} of the top {rule.n_ref} references < {rule.min_part_share:g}")
    kept = measures.get("accuracy_kept")
    if kept is not None and kept < rule.min_accuracy_kept:
        reasons.append(f"the fine-tuned network keeps {kept:.2f} of its held-out accuracy < {rule.min_accuracy_kept:g}")
    return reasons


def assess(truth: PlantedTruth, heldout_stats: LayerStats, fit_stats: LayerStats, fit: ImageDataset,
           rule: ValidityRule, batch_size: int = 256, device: torch.device | str = "cpu",
           accuracy_kept: float | None = None, shares: dict[str, float] | None = None) -> dict[str, Any]:
    """Measures, verdict and reasons of one planted channel (``accuracy_kept``: the
    fine-tuned network's held-out accuracy over the original's; None = not judged;
    ``shares``: its :func:`part_shares` when computed already, e.g. read from the cache)."""
    measures = concept_measures(heldout_stats, truth.channel, truth.classes)
    measures.update(shares if shares is not None else part_shares(truth, fit_stats, fit, rule.n_ref, batch_size, device))
    if accuracy_kept is not None:
        measures["accuracy_kept"] = float(accuracy_kept)
    reasons = judge(measures, rule, truth.classes)
    return {"accepted": not reasons, "reasons": reasons, **{k: round(v, 4) for k, v in measures.items()}}
