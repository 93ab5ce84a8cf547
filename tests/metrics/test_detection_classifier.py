"""Detection as a classifier: AUROC/AUPRC against sklearn and hand counts, bootstrap
intervals, trivial detectors, and the factor-based truth on the synthetic world."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from benchmark.core.types import NotApplicable
from metrics._detection import classifier_report, ranking_scores, weighted_auroc_auprc

# truth:            pos  pos  neg  neg  pos  neg
TRUTH = np.array([True, True, False, False, True, False])
SCORES = np.array([0.1, 0.5, 0.5, 0.8, 0.3, 0.2])  # similarity: low = polysemantic


def test_auroc_auprc_known_case():
    out = ranking_scores(TRUTH, SCORES, n_boot=200)
    # positives 0.1, 0.5, 0.3 vs negatives 0.5, 0.8, 0.2 (lower score wins): 0.1 beats 3, 0.5 ties 0.5
    # and beats 0.8 (1.5), 0.3 beats 2 -> 6.5 / 9
    assert out["auroc"] == pytest.approx(6.5 / 9)
    # ranked by -score: 0.1 (+) P=1 R=1/3; 0.2 (-); 0.3 (+) P=2/3 R=2/3; {0.5 +, 0.5 -} P=3/5 R=1
    assert out["auprc"] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    assert out["auroc"] == pytest.approx(roc_auc_score(TRUTH, -SCORES))
    assert out["auprc"] == pytest.approx(average_precision_score(TRUTH, -SCORES))
    assert out["auroc_ci_low"] <= out["auroc"] <= out["auroc_ci_high"]


def test_weighted_scores_equal_sklearn_on_resamples():
    rng = np.random.default_rng(1)
    y = rng.random(40) < 0.4
    d = np.round(rng.normal(size=40), 1)  # ties included
    for _ in range(20):
        idx = rng.integers(0, 40, 40)
        if y[idx].all() or not y[idx].any():
            continue
        w = np.bincount(idx, minlength=40)[None].astype(float)
        auroc, ap = weighted_auroc_auprc(y, d, w)
        assert auroc[0] == pytest.approx(roc_auc_score(y[idx], d[idx]))
        assert ap[0] == pytest.approx(average_precision_score(y[idx], d[idx]))
    assert np.isnan(weighted_auroc_auprc(y, d, np.eye(40)[[int(np.argmax(y))]])[0][0])  # one class only


def test_trivial_detectors_and_undefined():
    out = classifier_report(TRUTH, SCORES, gamma=0.5, sweep=(0.05, 0.5))
    assert (out["tp"], out["fp"], out["fn"], out["tn"]) == (2, 1, 1, 2)
    assert out["always_precision"] == 0.5 and out["always_recall"] == 1.0
    assert out["always_f1"] == pytest.approx(2 / 3) and out["always_auroc"] == 0.5 and out["always_auprc"] == 0.5
    # random scores, averaged over 200 draws: AUROC about 0.5, recall about gamma, precision about prevalence
    assert out["random_auroc"] == pytest.approx(0.5, abs=0.05) and out["random_recall"] == pytest.approx(0.5, abs=0.06)
    assert out["random_precision"] == pytest.approx(0.5, abs=0.06)
    assert out["random_auroc_ci_low"] < 0.5 < out["random_auroc_ci_high"]
    assert "precision@0.05" not in out and out["predicted@0.05"] == 0  # undefined, left out
    assert classifier_report(TRUTH, SCORES, gamma=0.5, sweep=(0.05, 0.5)) == out  # seeded: deterministic
    with pytest.raises(NotApplicable, match="recall is undefined"):
        classifier_report(np.zeros(3, bool), [0.1, 0.2, 0.3], 0.5, ())
    with pytest.raises(NotApplicable, match="empty"):
        classifier_report(np.zeros(0, bool), [], 0.5, ())
    all_pos = classifier_report(np.ones(3, bool), [0.1, 0.2, 0.3], 0.5, ())
    assert "auroc" not in all_pos and all_pos["auprc"] == 1.0


# ----------------------------------------------------------------- factor-based truth
def _world_relevance(channels: dict[int, list[int]]) -> np.ndarray:
    rel = np.zeros((16, max(channels) + 1), dtype=bool)
    for c, classes in channels.items():
        rel[classes, c] = True
    return rel


def test_factor_truth_on_world_classes():
    from benchmark.sources.world.classes import CLASS_INFOS, classes_sharing
    from metrics.factor_gamma import factor_truth, world_primitives

    prims = world_primitives(CLASS_INFOS)
    stripes, dogs = list(classes_sharing("texture", 0)), list(classes_sharing("group", 0))
    assert stripes == [0, 4, 8, 12] and dogs == [0, 1, 2, 3]
    # channel 0: a stripe detector (all four striped classes); channel 1: beagle + Granny Smith only;
    # channel 2: a cross (dog shape) detector; channel 3: beagle only among the striped classes
    rel = _world_relevance({0: stripes, 1: [0, 4], 2: dogs, 3: [0, 5]})
    rows = [(0, (0,), (4,)),   # beagle | Granny Smith share stripes; channel 0 responds: not polysemantic
            (0, (0,), (5,)),   # beagle | strawberry share nothing: polysemantic
            (1, (0,), (4,)),   # share stripes; channel 1 covers 2 of the 4 striped classes
            (2, (0,), (1,)),   # beagle | golden retriever share the cross; channel 2 responds: not
            (0, (0,), (1,)),   # share the cross, channel 0 is relevant to 1 of 4 dogs: polysemantic
            (3, (0,), (4,)),   # share stripes, channel 3 is relevant to 1 of 4 striped classes: polysemantic
            (0, (0, 4), (8,))]  # every class striped: not polysemantic
    truth = factor_truth(rel, prims, *zip(*rows))  # min_share 0.5: 2 of 4 carriers suffice
    assert truth.tolist() == [False, True, False, False, True, True, False]
    strict = factor_truth(rel, prims, *zip(*rows), min_share=1.0)  # every carrier needed
    assert strict.tolist() == [False, True, True, False, True, True, False]
    assert world_primitives(CLASS_INFOS[:4]) is None
    with pytest.raises(ValueError, match="channel 9 out of range"):
        factor_truth(rel, prims, [9], [(0,)], [(1,)])


def test_factor_metric_on_world_context_and_elsewhere():
    import pandas as pd

    from benchmark.sources.datasets import ClassInfo
    from benchmark.sources.world.classes import CLASS_INFOS
    from metrics.factor_gamma import FactorGamma

    stripes = [0, 4, 8, 12]
    counts = torch.full((16,), 10)
    importance = torch.zeros(16, 3, dtype=torch.long)
    importance[stripes, 0] = 10
    importance[[0, 5], 1] = 10  # beagle | strawberry share nothing
    stats = SimpleNamespace(importance_counts=importance,
                            relevant_classes=lambda p: importance >= p * counts[:, None])
    table = pd.DataFrame(dict(channel=[0, 1, 0, 1], concept_a=[(0,), (0,), (4,), (0,)],
                              concept_b=[(4,), (5,), (8,), (5,)], score=[0.9, 0.1, 0.8, 0.2]))
    out = FactorGamma().score(table, SimpleNamespace(fit=SimpleNamespace(classes=CLASS_INFOS), stats=stats))
    # truth: F, T, F, T; the scores separate them perfectly
    assert out["positives"] == 2 and out["auroc"] == 1.0 and out["precision"] == 1.0 and out["recall"] == 1.0
    assert FactorGamma().label == "factor_gamma[p=0.75,share=0.5]"
    with pytest.raises(ValueError, match="min_share must lie in"):
        FactorGamma(min_share=0.0)
    other = tuple(ClassInfo(i, f"n{i:08d}", f"c{i}.n.01", f"c{i}") for i in range(16))
    with pytest.raises(NotApplicable, match="synthetic world"):
        FactorGamma().score(table, SimpleNamespace(fit=SimpleNamespace(classes=other), stats=stats))
