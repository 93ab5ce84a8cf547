"""Category purity of a split's virtual neurons on the shared reference pool: a labelled split
score that needs no planted truth (real photos carry WordNet categories; the synthetic world's
images carry their classes).

The pool is the target channel's top held-out images (:mod:`benchmark.engine.pool`, PURE's
reference ranking; the same images ``embedding_separation``, the planted ARI and the split
cards use), each assigned to the virtual neuron with the largest positive spatial sum. The
purity of a set of images is the share of same-category pairs among its distinct pairs
(Simpson's index, the unbiased U-statistic ``sum_t n_t (n_t - 1) / (n (n - 1))``). With
``P_within`` the share of same-category pairs among pairs of images assigned to the SAME
virtual neuron and ``P_pool`` that share among all pool pairs:

    gain = (P_within - P_pool) / (1 - P_pool)

the share of the pool's category mixing that the split removes: 1 when every virtual neuron
holds one category, 0 when the split leaves the mixing as it was. Known answers
(``tests/metrics/test_category_purity.py``): a split that puts the pool into one group
(identity, duplicate: copies cannot tell images apart) scores exactly 0; ANY assignment
independent of the categories (a random split, a nuisance factor) has expectation exactly 0
given the group sizes (each within-group pair is then a uniformly random pool pair), so
small groups cannot buy purity; a split by category scores 1.

Not applicable when the pool holds one category (nothing to separate) or no two images share
a virtual neuron. No published method defines this score; it is the benchmark's own
labelled score for real networks, validated against planted truth in the meta-evaluation.
It rewards splitting by category, so the label floor (``class_gate``) can score high on it:
it is a yardstick of "the virtual neurons follow the network's concepts", read together
with the no-label scores.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

import numpy as np

from benchmark.core.plugins import Metric
from benchmark.core.registry import METRICS
from benchmark.core.types import Column, Context, NotApplicable, Split
from benchmark.engine.pool import pool_labels, reference_pool


def same_pairs(labels: np.ndarray) -> tuple[float, float]:
    """(same-category pairs, all distinct pairs) among ``labels``."""
    _, counts = np.unique(labels, return_counts=True)
    n = int(counts.sum())
    return float((counts * (counts - 1)).sum() / 2), float(n * (n - 1) / 2)


def purity_gain(categories: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """``gain``, ``within`` (P_within), ``pool_purity`` (P_pool) and ``groups`` (non-empty
    groups) of a pool with ``categories`` assigned to ``groups`` (see the module docstring)."""
    categories, groups = np.asarray(categories), np.asarray(groups)
    if categories.shape != groups.shape:
        raise ValueError(f"one group per image: {groups.shape} groups for {categories.shape} images")
    same_pool, pairs_pool = same_pairs(categories)
    if pairs_pool == 0 or same_pool == pairs_pool:
        raise NotApplicable("the reference pool holds a single category (or under two images): nothing to separate")
    same, pairs = 0.0, 0.0
    for g in np.unique(groups):
        s, p = same_pairs(categories[groups == g])
        same, pairs = same + s, pairs + p
    if pairs == 0:
        raise NotApplicable("no two pool images share a virtual neuron")
    p_pool, p_within = same_pool / pairs_pool, same / pairs
    return {"gain": (p_within - p_pool) / (1.0 - p_pool), "within": p_within, "pool_purity": p_pool,
            "groups": float(len(np.unique(groups)))}


@METRICS.register("category_purity")
@dataclass(frozen=True)
class CategoryPurity(Metric):
    """Share of the reference pool's category mixing removed by the split (labelled, no truth needed).

    Attributes:
        pool_size: images of the shared reference pool (PURE's n_ref = 100, as the other pool scores).
    """

    pool_size: int = 100

    columns: ClassVar[tuple[Column, ...]] = (Column("gain", True, (None, 1.0)),)
    scope: ClassVar[str] = "split"
    label_free: ClassVar[bool] = True  # needs no planted truth (category labels only): ranked by benchmark.evaluation.meta_evaluation
    calibrated_columns: ClassVar[tuple[str, ...]] = ("gain",)
    scale_invariant: ClassVar[tuple[str, ...]] = ("gain",)  # argmax labels ignore one positive factor
    titles: ClassVar[Mapping[str, str]] = {"gain": "Category purity gain"}

    def __post_init__(self) -> None:
        if self.pool_size < 2:
            raise ValueError(f"pool_size must be >= 2, got {self.pool_size}")

    @property
    def label(self) -> str:
        return "category_purity"

    def score(self, split: Split, context: Context) -> dict[str, float]:
        t = split.target
        ids = reference_pool(context, t.layer, t.channel, self.pool_size)
        categories = context.heldout.labels[ids].cpu().numpy()
        groups = pool_labels(split, context, ids).cpu().numpy()
        return {**purity_gain(categories, groups), "pool": float(ids.numel())}
