"""wordnet_gamma: hand-counted precision/recall on hand-made class-pair tables.

The pure core is tested without WordNet; one test uses the real WordNet 3.0 (provisioned by
``python -m benchmark.sources.wordnet_setup``) on classes of the synthetic world.
"""
from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest

import benchmark.sources.wordnet
from benchmark.core.types import NotApplicable
from benchmark.sources.datasets import ClassInfo
from metrics.wordnet_gamma import DEFAULT_SWEEP, WordNetGamma, gamma_precision_recall

# truth (sim < 0.65):   T    T    F    F    T     F
SIMS = [0.2, 0.3, 0.9, 0.8, 0.4, 0.95]
# pred (score < 0.5):   T    F    T    F    T     F
SCORES = [0.1, 0.6, 0.2, 0.7, 0.45, 0.9]


def test_counts_and_rates_by_hand():
    c = gamma_precision_recall(SIMS, SCORES, gamma=0.5, threshold=0.65)
    assert (c.tp, c.fp, c.fn, c.tn) == (2, 1, 1, 2)
    assert (c.precision, c.recall, c.f1) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    c = gamma_precision_recall(SIMS, SCORES, gamma=0.3, threshold=0.65)  # predicts rows 0 and 2
    assert (c.tp, c.fp, c.fn) == (1, 1, 2)
    assert (c.precision, c.recall, c.f1) == pytest.approx((0.5, 1 / 3, 2 * 0.5 * (1 / 3) / (0.5 + 1 / 3)))
    c = gamma_precision_recall(SIMS, SCORES, gamma=0.65, threshold=0.65)
    assert (c.precision, c.recall) == pytest.approx((0.75, 1.0))


def test_undefined_cases():
    none_predicted = gamma_precision_recall(SIMS, SCORES, gamma=0.05, threshold=0.65)
    assert none_predicted.precision is None and none_predicted.f1 is None and none_predicted.recall == 0.0
    all_related = gamma_precision_recall(SIMS, SCORES, gamma=0.5, threshold=0.1)
    assert all_related.recall is None and all_related.precision == 0.0 and all_related.f1 is None
    no_hit = gamma_precision_recall([0.9, 0.2], [0.1, 0.9], gamma=0.5, threshold=0.65)
    assert (no_hit.precision, no_hit.recall, no_hit.f1) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="equal length"):
        gamma_precision_recall([0.1], [0.1, 0.2], 0.5, 0.65)
    with pytest.raises(ValueError, match="finite"):
        gamma_precision_recall([0.1], [float("nan")], 0.5, 0.65)


def fake_context(n: int):
    classes = tuple(ClassInfo(i, f"n{i:08d}", f"c{i}.n.01", f"c{i}") for i in range(n))
    return SimpleNamespace(fit=SimpleNamespace(classes=classes))


@pytest.fixture
def fake_wordnet(monkeypatch):
    """Similarity of classes c0..c7 from a table; class sets use the max over cross pairs."""
    table = {(0, 1): 0.2, (2, 3): 0.3, (4, 5): 0.9, (6, 7): 0.8, (0, 7): 0.4, (1, 7): 0.35, (5, 6): 0.95,
             (2, 6): 0.1}
    calls = []

    def similarity(a, b, measure="wup"):
        calls.append(measure)
        i, j = sorted((int(a[1]), int(b[1])))
        return table[(i, j)]

    monkeypatch.setattr(benchmark.sources.wordnet, "similarity", similarity)
    return calls


def hand_table():
    # rows reproduce SIMS through class sets: (0,1)=0.2; (2,3)=0.3; {4}x{5}=0.9; (6,7)=0.8;
    # {0,1}x{7} = max(0.4, 0.35) = 0.4; {5,2}x{6} = max(0.95, 0.1) = 0.95
    return pd.DataFrame(dict(
        channel=[1, 1, 2, 2, 3, 3],
        concept_a=[(0,), (2,), (4,), (6,), (0, 1), (5, 2)],
        concept_b=[(1,), (3,), (5,), (7,), (7,), (6,)],
        score=SCORES,
    ))


def test_metric_on_a_hand_table(fake_wordnet):
    metric = WordNetGamma(sweep=(0.05, 0.3, 0.5))
    out = metric.score(hand_table(), fake_context(8))
    assert (out["precision"], out["recall"], out["f1"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert (out["tp"], out["fp"], out["fn"], out["tn"], out["unrelated"], out["pairs"]) == (2, 1, 1, 2, 3, 6)
    # decision -score; positives (rows 0, 1, 4) score 0.1, 0.6, 0.45, negatives 0.2, 0.7, 0.9:
    # positive below negative in 3 + 2 + 2 = 7 of 9 pairs
    assert out["auroc"] == pytest.approx(7 / 9) and out["prevalence"] == pytest.approx(0.5)
    assert out["always_precision"] == pytest.approx(0.5) and out["always_auroc"] == 0.5
    assert out["precision@0.30"] == pytest.approx(0.5) and out["recall@0.30"] == pytest.approx(1 / 3)
    assert "precision@0.05" not in out and "f1@0.05" not in out
    assert out["predicted@0.05"] == 0.0 and out["recall@0.05"] == 0.0
    assert set(fake_wordnet) == {"wup"}
    assert metric.label == "wordnet_gamma[wup<0.65]"
    assert WordNetGamma(measure="lch").label == "wordnet_gamma[lch<1.7]"
    assert len(DEFAULT_SWEEP) == 9 and DEFAULT_SWEEP[0] == 0.3 and DEFAULT_SWEEP[-1] == 0.7
    assert "precision@0.70" in WordNetGamma().score(hand_table(), fake_context(8))
    # a table read back from CSV holds the concepts as text
    as_text = hand_table().assign(concept_a=lambda t: t.concept_a.map(str), concept_b=lambda t: t.concept_b.map(str))
    assert WordNetGamma(sweep=(0.05, 0.3, 0.5)).score(as_text, fake_context(8)) == out


def test_metric_not_applicable_and_bad_tables(fake_wordnet):
    ctx = fake_context(8)
    with pytest.raises(NotApplicable, match="recall is undefined"):
        WordNetGamma(threshold=0.05).score(hand_table(), ctx)
    nothing_predicted = WordNetGamma(gamma=0.05).score(hand_table(), ctx)  # precision undefined: left out
    assert "precision" not in nothing_predicted and "f1" not in nothing_predicted
    assert nothing_predicted["recall"] == 0.0 and "auroc" in nothing_predicted
    with pytest.raises(NotApplicable, match="empty"):
        WordNetGamma().score(hand_table().iloc[:0], ctx)
    with pytest.raises(ValueError, match="lacks columns \\['score'\\]"):
        WordNetGamma().score(hand_table().drop(columns="score"), ctx)
    with pytest.raises(ValueError, match="out of range"):
        WordNetGamma().score(hand_table(), fake_context(4))
    with pytest.raises(ValueError, match="allowed: wup, path, lch"):
        WordNetGamma(measure="jcn")


def test_real_wordnet_on_world_classes():
    from benchmark.sources.world.classes import CLASS_INFOS

    ctx = SimpleNamespace(fit=SimpleNamespace(classes=CLASS_INFOS))
    # 0 beagle, 1 golden retriever, 4 Granny Smith, 8 sports car, 12 violin, 13 cello
    table = pd.DataFrame(dict(
        channel=[0, 0, 1, 1, 2, 2],
        concept_a=[(0,), (0,), (8,), (12,), (0, 1), (0, 4)],
        concept_b=[(4,), (1,), (12,), (13,), (4,), (1,)],
        # unrelated?  yes   no    yes    no    yes      no (beagle ~ golden retriever)
        score=[0.1, 0.2, 0.9, 0.8, 0.3, 0.6],
    ))
    for measure in ("wup", "path", "lch"):
        out = WordNetGamma(measure=measure).score(table, ctx)
        # predicted: rows 0, 1, 4 -> TP rows 0, 4; FP row 1; FN row 2
        assert (out["tp"], out["fp"], out["fn"], out["tn"]) == (2, 1, 1, 2), measure
        assert out["precision"] == pytest.approx(2 / 3) and out["recall"] == pytest.approx(2 / 3)
