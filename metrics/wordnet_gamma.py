"""Detection of polysemantic (channel, class pair)s scored against WordNet (Hesse et al.,
CVPR-W 2025, arXiv 2504.12939: the gamma rule, justified there by WordNet similarity).

Definition. Each row of the detection table is a channel with two concepts (class sets)
and a method's polysemanticity score s (a similarity: low means polysemantic).
Ground truth: the pair is *unrelated* (a true positive case) iff the WordNet similarity of
the two concepts is below ``threshold``; the similarity of two class SETS is the maximum
over all cross pairs of classes (related if any two classes are related). Prediction:
*polysemantic* iff ``s < gamma``. Then, with TP/FP/FN counted over the rows,
precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2 P R / (P + R).
Beyond the paper, the score is also judged as a classifier (AUROC, AUPRC with bootstrap
intervals) next to the trivial detectors "always polysemantic" and "random" on the same
rows: :mod:`metrics._detection` (shared with the factor-truth metric ``factor_gamma``).

Undefined cases (never reported as 0 when they do not apply):
* no unrelated pair in the table: recall is undefined at every gamma -> NotApplicable;
* no pair predicted polysemantic at a gamma: precision (and F1) are undefined there and
  their keys are left out (``predicted@g``, the number of predicted positives, is always
  reported); AUROC/AUPRC still are;
* predictions and positives exist but TP = 0: precision = recall = 0 and F1 = 0.

Default thresholds (``threshold=None``) per measure: wup 0.65, path 0.15, lch 1.7 (lch is a
monotone function of path for nouns; 1.7 sits between path lengths 5 and 6 like path 0.15).
They put every within-group pair of the synthetic world related and every cross-group pair
unrelated (wup: cross-group <= 0.55, within-group >= 0.72), and on ImageNet call e.g.
cowboy hat | lampshade (wup 0.63) unrelated and golden retriever | tabby (0.71) related.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from benchmark.core.plugins import Metric
from benchmark.core.registry import METRICS
from benchmark.core.types import Column, Context, NotApplicable
from metrics._detection import DETECTION_COLUMNS, DetectionCounts, classifier_report, counts

__all__ = ["DEFAULT_SWEEP", "DEFAULT_THRESHOLDS", "DetectionCounts", "WordNetGamma", "gamma_precision_recall",
           "read_table"]

DEFAULT_THRESHOLDS: dict[str, float] = {"wup": 0.65, "path": 0.15, "lch": 1.7}
DEFAULT_SWEEP: tuple[float, ...] = tuple(round(0.3 + 0.05 * i, 2) for i in range(9))
REQUIRED_COLUMNS = ("channel", "concept_a", "concept_b", "score")


def gamma_precision_recall(similarities: Sequence[float], scores: Sequence[float], gamma: float,
                           threshold: float) -> DetectionCounts:
    """Counts of the gamma rule against the WordNet truth, one entry per (channel, pair).

    Args:
        similarities: WordNet similarity of each pair (truth: unrelated iff < threshold).
        scores: the method's polysemanticity score of each pair (polysemantic iff < gamma).
    """
    sim = np.asarray(similarities, dtype=float)
    s = np.asarray(scores, dtype=float)
    if sim.shape != s.shape or sim.ndim != 1:
        raise ValueError(f"similarities and scores must be 1-D of equal length, got {sim.shape} and {s.shape}")
    if not (np.isfinite(sim).all() and np.isfinite(s).all()):
        raise ValueError("similarities and scores must be finite (no NaN/inf)")
    return counts(sim < threshold, s, gamma)


@METRICS.register("wordnet_gamma")
@dataclass(frozen=True)
class WordNetGamma(Metric):
    """AUROC/AUPRC of the score and precision/recall/F1 of "score < gamma" against
    "WordNet-unrelated" class pairs (``seed``: bootstrap and random detector)."""

    gamma: float = 0.5
    sweep: tuple[float, ...] = DEFAULT_SWEEP
    measure: str = "wup"
    threshold: float | None = None
    seed: int = 0

    columns: ClassVar[tuple[Column, ...]] = DETECTION_COLUMNS
    titles: ClassVar[Mapping[str, str]] = {"auroc": "WordNet AUROC", "auprc": "WordNet AUPRC", "f1": "WordNet F1",
                                           "precision": "WordNet precision", "recall": "WordNet recall"}
    scope: ClassVar[str] = "detection"

    def __post_init__(self) -> None:
        if self.measure not in DEFAULT_THRESHOLDS:
            raise ValueError(f"unknown WordNet measure {self.measure!r}; allowed: {', '.join(DEFAULT_THRESHOLDS)}")
        object.__setattr__(self, "sweep", tuple(float(g) for g in self.sweep))

    @property
    def similarity_threshold(self) -> float:
        return DEFAULT_THRESHOLDS[self.measure] if self.threshold is None else float(self.threshold)

    @property
    def label(self) -> str:
        return f"wordnet_gamma[{self.measure}<{self.similarity_threshold:g}]"

    def similarities(self, table: Any, context: Context) -> np.ndarray:
        """Max WordNet similarity over the cross pairs of classes of each row's concepts."""
        from benchmark.sources.wordnet import similarity

        classes = context.fit.classes
        cache: dict[tuple[int, int], float] = {}

        def sim(a: int, b: int) -> float:
            key = (min(a, b), max(a, b))
            if key not in cache:
                for t in key:
                    if not 0 <= t < len(classes):
                        raise ValueError(f"class index {t} out of range: the dataset has {len(classes)} classes")
                cache[key] = similarity(classes[key[0]].synset, classes[key[1]].synset, self.measure)
            return cache[key]

        return np.array([max(sim(int(a), int(b)) for a in _as_classes(ca) for b in _as_classes(cb))
                         for ca, cb in zip(table["concept_a"], table["concept_b"])], dtype=float)

    def score(self, table: Any, context: Context) -> dict[str, float]:
        table = read_table(table)
        sims = self.similarities(table, context)
        threshold = self.similarity_threshold
        unrelated = sims < threshold
        if not unrelated.any():
            raise NotApplicable(f"no pair of the {len(table)} is WordNet-unrelated ({self.measure} < {threshold:g}): "
                                "recall is undefined")
        out = classifier_report(unrelated, table["score"].to_numpy(dtype=float), self.gamma, self.sweep, seed=self.seed)
        out["unrelated"] = out["positives"]
        return out


def read_table(table: Any):
    """The detection table as a DataFrame, checked: the required columns, finite scores;
    NotApplicable when empty."""
    import pandas as pd

    table = pd.DataFrame(table)
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"detection table lacks columns {missing}; it needs {list(REQUIRED_COLUMNS)}")
    if len(table) == 0:
        raise NotApplicable("the detection table is empty")
    scores = table["score"].to_numpy(dtype=float)
    if not np.isfinite(scores).all():
        raise ValueError(f"detection table has {int((~np.isfinite(scores)).sum())} non-finite scores")
    return table


def _as_classes(concept: Any) -> tuple[int, ...]:
    """A concept cell: one class id, a sequence of them, or its text form ("(3, 7)", as a
    saved detection CSV holds it)."""
    if isinstance(concept, str):
        try:
            concept = ast.literal_eval(concept.strip())
        except (ValueError, SyntaxError):
            raise ValueError(f"cannot read the concept {concept!r}: expected class ids like '(3, 7)'") from None
    if isinstance(concept, (int, np.integer)):
        return (int(concept),)
    classes = tuple(int(t) for t in concept)
    if not classes:
        raise ValueError("a concept in the detection table has no classes")
    return classes
