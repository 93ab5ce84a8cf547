"""Activation ratios of virtual neurons on concept images (Hesse et al., CVPR-W 2025,
arXiv 2504.12939; ``get_results.py`` of github.com/visinf/disentangle-channels).

Definition. For each concept i (a class set) take the held-out images of its classes and
keep those on which the target channel matters in the ORIGINAL model: relative positive
attribution ``R_c(n) >= tau`` (tau: the layer's capture threshold ``context.stats.tau``, i.e. the
ARV candidate rule's tau, calibrated on the fit split where the config calibrates it; 0.03, the
paper's value, when the statistics carry none; a metric parameter overrides it) (Input x Gradient of the layer output w.r.t. the true-class
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

Columns (family-fair). The ideal is own 1, cross 0. The distance uses the RATIO OF SUMS
``s_ij = sum_n v_j(n) / sum_n o(n)`` over the kept images of concept i (a mean of per-image
ratios explodes where o(n) is near 0: the oracle of one planted world target scored a mean
distance of 17.6 on per-image ratios). Per concept i with matched neuron m(i):
``own_i = s_{i,m(i)}`` (0 when the concept is unmatched, e.g. k = 1) and ``cross_i = sum over
j != m(i) of s_ij`` (everything that leaks to other virtual neurons), and

    distance_i = |own_i - 1| + |cross_i|        (lower is better, 0 = ideal).

* ``distance`` -- mean of distance_i over the concepts that keep images (PER-TARGET
  aggregation: every concept weighs the same, as our per-target tables);
* ``distance_pooled`` -- the same weighted by the kept images per concept (IMAGE-WEIGHTED
  aggregation: the ARV paper pools the per-image ratios of all pairs; averaging
  ``distance_pooled`` over targets weighted by the ``kept`` extra gives the pooled number);
* ``own_gating`` / ``cross_gating`` for gating splits, ``own_surgery`` / ``cross_surgery`` for
  surgery splits, ``own_dictionary`` / ``cross_dictionary`` for dictionary splits: the authors'
  per-image mean ratios r_ij (own = r_{i,m(i)}, cross = the sum over the other neurons),
  averaged over concepts. They are kept apart on purpose: for hard-gating methods
  own + cross = 1 by construction (a routing fraction), for surgery and dictionary splits
  they are signed magnitudes (own may overshoot 1, cross may be negative), so a raw
  own/cross never compares the two families. ``cross_*`` is the mean of ``|cross_i|`` (the
  leak whatever its sign; ideal 0, lower is better: a cross of -0.5 leaks as much as +0.5);
  the signed mean is the extra ``cross_*_signed``. For gating splits cross_i >= 0, so the two
  agree.

Any split whose virtual neurons are copies of the channel scores distance 1 (duplicate: own
0.5, cross 0.5; identity: own 1 on one concept, the other unmatched with cross 1); the
oracle of a cleanly planted channel scores about 0.

Gap to the authors' code (github.com/visinf/disentangle-channels ``get_results.py``): when
one concept keeps no image after the relevance filter, their code still reports the other
concept; so do we (``concepts_scored`` counts them). Not applicable only when no concept
keeps an image. Extra keys per concept i: ``own_c{i}``, ``cross_c{i}``, ``distance_c{i}``,
``ratio_v{j}_c{i}``, ``matched_c{i}`` (-1 if unmatched), ``kept_c{i}`` / ``images_c{i}`` /
``near_zero_c{i}`` (kept images, images of the concept, images dropped for ``|o| <= eps``),
``residual_c{i}`` (mean res/o) for splits with a residual; ``kept``, ``concepts_scored``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from benchmark.core.plugins import Metric
from benchmark.core.registry import METRICS
from benchmark.core.types import Column, Context, NotApplicable, Split
from metrics._common import batches, original_with_attribution, spatial_sum, split_concepts


@METRICS.register("activation_ratio")
@dataclass(frozen=True)
class ActivationRatio(Metric):
    """Own/cross activation ratios of virtual neurons on concept images (Hesse et al. 2025)."""

    requires: ClassVar[frozenset[str]] = frozenset({"concepts"})  # does not apply without it

    tau: float | None = None  # None: the layer's capture tau (context.stats.tau), else 0.03
    eps: float = 1e-6

    columns: ClassVar[tuple[Column, ...]] = (
        Column("distance", False, (0.0, None)),
        Column("distance_pooled", False, (0.0, None)),
        Column("own_gating", None, optional=True),
        Column("cross_gating", False, optional=True),
        Column("own_surgery", None, optional=True),
        Column("cross_surgery", False, optional=True),
        Column("own_dictionary", None, optional=True),
        Column("cross_dictionary", False, optional=True),
    )
    titles: ClassVar[Mapping[str, str]] = {"distance": "Activation-ratio distance",
                                           "distance_pooled": "Activation-ratio distance (pooled)"}
    scope: ClassVar[str] = "split"
    label_free: ClassVar[bool] = True  # needs no planted truth: ranked by benchmark.evaluation.meta_evaluation
    calibrated_columns: ClassVar[tuple[str, ...]] = ()
    not_calibrated: ClassVar[str] = (
        "routing of the channel's net signed sum, not recovery of parts: on planted world targets the "
        "oracle's signed pre-BN parts cancel on concept images (own 5.5, cross -4.5), so the oracle is "
        "far from the ideal (tests/metrics/test_metric_sanity.py measured distances 0.5 and 9.9)")

    def __post_init__(self) -> None:
        if self.tau is not None and not 0.0 <= self.tau <= 1.0:
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
        kept_counts = np.zeros(m)
        summed = np.zeros((m, k))
        out: dict[str, float] = {}
        tau = self.threshold(context)
        for i, classes in enumerate(concepts):
            ratio_sum, res_sum, kept, near_zero, total, v_sum, o_sum = self._concept(split, context, classes, tau)
            out[f"images_c{i}"], out[f"kept_c{i}"], out[f"near_zero_c{i}"] = float(total), float(kept), float(near_zero)
            kept_counts[i] = kept
            if kept:
                ratios[i] = ratio_sum / kept
                summed[i] = v_sum / o_sum if o_sum != 0 else 0.0
                if res_sum is not None:
                    out[f"residual_c{i}"] = float(res_sum / kept)
        scored = [i for i in range(m) if kept_counts[i] > 0]
        if not scored:
            raise NotApplicable(
                f"no held-out image of any concept has relative positive attribution >= tau={tau:.4g} for "
                f"channel {split.target.channel} with |orig| > {self.eps}")
        if not np.isfinite(ratios[scored]).all():
            raise NotApplicable("non-finite values: NaN or inf in the activation ratios of the virtual neurons")
        if split.concepts is not None:
            match = {i: i for i in range(m)}
        else:
            rows, cols = linear_sum_assignment(ratios[scored], maximize=True)
            match = {scored[int(r)]: int(c) for r, c in zip(rows, cols)}
        own_values, cross_values, distances = [], [], []
        for i in scored:
            j_own = match.get(i, -1)
            own = float(ratios[i, j_own]) if j_own >= 0 else 0.0
            cross = float(sum(ratios[i, j] for j in range(k) if j != j_own))
            own_s = float(summed[i, j_own]) if j_own >= 0 else 0.0
            cross_s = float(sum(summed[i, j] for j in range(k) if j != j_own))
            out[f"matched_c{i}"] = float(j_own)
            out[f"own_c{i}"], out[f"cross_c{i}"] = own, cross
            out[f"distance_c{i}"] = abs(own_s - 1.0) + abs(cross_s)
            own_values.append(own)
            cross_values.append(cross)
            distances.append(out[f"distance_c{i}"])
            for j in range(k):
                out[f"ratio_v{j}_c{i}"] = float(ratios[i, j])
        weights = kept_counts[scored]
        family = split.recomposition
        out.update({
            "distance": float(np.mean(distances)),
            "distance_pooled": float(np.average(distances, weights=weights)),
            f"own_{family}": float(np.mean(own_values)),
            f"cross_{family}": float(np.mean(np.abs(cross_values))),
            f"cross_{family}_signed": float(np.mean(cross_values)),
            "kept": float(weights.sum()),
            "concepts_scored": float(len(scored)),
        })
        return out

    def threshold(self, context: Context) -> float:
        """The relevance threshold: the parameter, else the capture tau of the layer, else 0.03."""
        if self.tau is not None:
            return self.tau
        captured = getattr(context.stats, "tau", None)
        return 0.03 if captured is None else float(captured)

    def _concept(self, split: Split, context: Context, classes: tuple[int, ...], tau: float):
        """Sums of per-image ratios over the kept images of one concept, and the counts."""
        idx = context.heldout.indices_of(classes)
        ratio_sum = np.zeros(split.k)
        v_sum, o_sum = np.zeros(split.k), 0.0
        res_sum = 0.0 if split.residual_fn is not None else None
        kept = near_zero = 0
        for images, labels in batches(context.heldout, idx, context.batch_size, context.device):
            orig_map, share = original_with_attribution(
                context.model, split.target.layer, split.target.channel, images, labels)
            orig = spatial_sum(orig_map).double()
            attributed = share >= tau
            nonzero = orig.abs() > self.eps
            near_zero += int((attributed & ~nonzero).sum())
            keep = attributed & nonzero
            if not bool(keep.any()):
                continue
            with torch.no_grad():
                v = spatial_sum(split.activations(images[keep])).double()  # (n, k)
                ratio_sum += (v / orig[keep, None]).sum(0).cpu().numpy()
                v_sum += v.sum(0).cpu().numpy()
                o_sum += float(orig[keep].sum())
                if res_sum is not None:
                    res = spatial_sum(split.residual(images[keep])).double()  # type: ignore[arg-type]  # res_sum is set for surgery splits only
                    res_sum += float((res / orig[keep]).sum())
            kept += int(keep.sum())
        return ratio_sum, res_sum, kept, near_zero, int(idx.numel()), v_sum, o_sum
