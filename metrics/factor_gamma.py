"""Detection of polysemantic (channel, class pair)s scored against the synthetic world's
generating factors: a second ground truth next to WordNet (``wordnet_gamma``).

Why. WordNet calls beagle and Granny Smith unrelated, but in the synthetic world both are
drawn striped (``benchmark.sources.world.classes``): a stripe detector serves them with ONE visual
concept and is not polysemantic for that pair. The generating factors know this.

The rule (exact). Every world class carries two visual primitives, its shape (shared by
its WordNet group) and its texture (shared by one class of every group). A channel
*responds to* a primitive iff it is relevant, by the importance rule that chose the
detection candidates (``LayerStats.relevant_classes(p)``, Hesse et al. 2025 step 1, the
same ``p`` as the detection track), to at least ``min_share`` of the classes that carry
the primitive. A (channel, concept A, concept B) row is *polysemantic* iff no primitive
that the channel responds to is carried by every class of A and of B. Two distinct world
classes share at most one primitive, so for single classes: a pair sharing nothing is
always polysemantic; a pair sharing a texture (or shape) is not polysemantic iff the
channel responds to that texture (shape).

``min_share`` = 0.5 (2 of the 4 carriers) by definition, not by fitting: relevance is an
attribution criterion (the channel matters for the class's logit), and a class's logit may
rest on other channels although this one responds, so demanding every carrier would call a
stripe detector polysemantic whenever one striped class is decided elsewhere. For a
detection candidate (both classes relevant) 0.5 means: sharing a primitive = one concept,
the reading of the ARV paper's critique that the WordNet truth conflates. ``min_share =
1`` is the strict reading; on the default run it calls 47 of the 52 texture-sharing and 39
of the 61 shape-sharing candidate pairs polysemantic (prevalence 0.87 instead of 0.44).

Scoring is the classifier report of :mod:`metrics._detection` (AUROC, AUPRC with bootstrap
intervals, precision/recall/F1 at gamma and over the sweep, trivial detectors). Datasets
other than the synthetic world have no generating factors: the metric does not apply.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from benchmark.core.plugins import Metric
from benchmark.core.registry import METRICS
from benchmark.core.types import Column, Context, NotApplicable
from metrics._detection import DETECTION_COLUMNS, classifier_report
from metrics.wordnet_gamma import DEFAULT_SWEEP, _as_classes, read_table

PRIMITIVES = ("shape", "texture")


def world_primitives(classes: Sequence[Any]) -> list[dict[str, int]] | None:
    """Shape and texture of every class when ``classes`` are the synthetic world's (same
    order and synsets), else None."""
    from benchmark.sources.world.classes import WORLD_CLASSES

    if len(classes) != len(WORLD_CLASSES):
        return None
    if any(getattr(c, "wnid", None) != w.info.wnid for c, w in zip(classes, WORLD_CLASSES)):
        return None
    return [{"shape": w.shape, "texture": w.texture} for w in WORLD_CLASSES]


def factor_truth(relevant: np.ndarray, primitives: Sequence[Mapping[str, int]], channels: Sequence[int],
                 concepts_a: Sequence[Sequence[int]], concepts_b: Sequence[Sequence[int]],
                 min_share: float = 0.5) -> np.ndarray:
    """Polysemantic (True) or not for each row, by the rule of the module docstring.

    Args:
        relevant: (T, C) bool, class t is relevant to channel c.
        primitives: per class, ``{"shape": s, "texture": t}``.
    """
    rel = np.asarray(relevant, dtype=bool)
    if rel.ndim != 2 or rel.shape[0] != len(primitives):
        raise ValueError(f"relevant must be (classes, channels) with {len(primitives)} classes, got {rel.shape}")
    carriers = {(kind, p[kind]): [t for t, q in enumerate(primitives) if q[kind] == p[kind]]
                for p in primitives for kind in PRIMITIVES}
    out = []
    for c, a, b in zip(channels, concepts_a, concepts_b):
        if not 0 <= int(c) < rel.shape[1]:
            raise ValueError(f"channel {c} out of range: the layer has {rel.shape[1]} channels")
        members = list(a) + list(b)
        for t in members:
            if not 0 <= int(t) < len(primitives):
                raise ValueError(f"class {t} out of range: {len(primitives)} classes")
        shared = [(kind, primitives[members[0]][kind]) for kind in PRIMITIVES
                  if all(primitives[t][kind] == primitives[members[0]][kind] for t in members)]
        served = any(rel[carriers[key], int(c)].mean() >= min_share for key in shared)
        out.append(not served)
    return np.array(out, dtype=bool)


@METRICS.register("factor_gamma")
@dataclass(frozen=True)
class FactorGamma(Metric):
    """AUROC/AUPRC and gamma-rule precision/recall/F1 against the generating-factor truth
    (``p``: relevance share of the importance rule; ``min_share``: share of a primitive's
    classes the channel must be relevant to; ``seed``: bootstrap and random detector)."""

    requires: ClassVar[frozenset[str]] = frozenset({"synthetic_world"})  # does not apply without it

    gamma: float = 0.5
    sweep: tuple[float, ...] = DEFAULT_SWEEP
    p: float = 0.75
    min_share: float = 0.5
    seed: int = 0

    columns: ClassVar[tuple[Column, ...]] = DETECTION_COLUMNS
    titles: ClassVar[Mapping[str, str]] = {"auroc": "Factor AUROC", "auprc": "Factor AUPRC", "f1": "Factor F1",
                                           "precision": "Factor precision", "recall": "Factor recall"}
    scope: ClassVar[str] = "detection"

    def __post_init__(self) -> None:
        for name in ("p", "min_share"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in (0, 1], got {getattr(self, name)}")
        object.__setattr__(self, "sweep", tuple(float(g) for g in self.sweep))

    @property
    def label(self) -> str:
        return f"factor_gamma[p={self.p:g},share={self.min_share:g}]"

    def truth(self, table: Any, context: Context) -> np.ndarray:
        primitives = world_primitives(context.fit.classes)
        if primitives is None:
            raise NotApplicable("only the synthetic world has generating factors (its classes are not this dataset's)")
        if getattr(context.stats, "importance_counts", None) is None:
            raise NotApplicable("the capture statistics hold no importance counts (needed for channel relevance)")
        if "layer" in table and table.groupby(["model", "layer"]).ngroups > 1:
            raise NotApplicable("the factor truth reads one (model, layer)'s statistics; this table spans several")
        relevant = context.stats.relevant_classes(self.p).cpu().numpy()
        return factor_truth(relevant, primitives, table["channel"].astype(int).tolist(),
                            [_as_classes(a) for a in table["concept_a"]], [_as_classes(b) for b in table["concept_b"]],
                            self.min_share)

    def score(self, table: Any, context: Context) -> dict[str, float]:
        table = read_table(table)
        truth = self.truth(table, context)
        return classifier_report(truth, table["score"].to_numpy(dtype=float), self.gamma, self.sweep, seed=self.seed)
