"""The headline rule (benchmark/evaluation/eligibility.py) on hand-made per-target values."""
from __future__ import annotations

import pandas as pd

from benchmark.evaluation.eligibility import headline_eligibility

ROLES = {"arv": "method", "pure": "method", "kmeans": "method", "identity": "no_op", "nuisance": "no_op",
         "class_gate": "label_floor", "oracle": "ceiling"}
TRUTHS = {("planted_recovery", "ari"), ("planted_recovery", "recovery")}


def _values(metric: str, column: str, means: dict[str, float], higher=True, track="planted") -> list[dict]:
    return [dict(track=track, label=label, metric=metric, column=column, model="m", layer="l", dataset="d",
                 target=f"t{t}", value=v, higher_is_better=higher) for label, v in means.items() for t in range(3)]


def _meta(metric, column, lows):
    return pd.DataFrame([dict(metric=metric, column=column, truth=t, spearman_lo=lo) for t, lo in lows.items()])


def test_a_column_on_which_a_no_op_reaches_the_median_method_is_not_headline():
    methods = {"arv": 0.5, "pure": 0.8, "kmeans": 0.6, "identity": 0.1, "nuisance": 0.85, "class_gate": 0.9}
    values = pd.DataFrame(_values("embedding_separation", "separation", methods))
    meta = _meta("embedding_separation", "separation", {"assignment": 0.2, "decomposition": 0.1})
    row = headline_eligibility(values, ROLES, TRUTHS, meta).iloc[0]
    assert not row["rule_a"] and row["rule_b"] and not row["eligible"]
    assert row["no_op"] == "nuisance" and row["median_method"] == 0.6
    assert "nuisance 0.85 reaches the median method 0.6" in row["evidence"]


def test_lower_is_better_and_the_label_floor_does_not_decide():
    methods = {"arv": 0.5, "pure": 0.3, "kmeans": 0.4, "identity": 0.9, "class_gate": 0.01}  # floor best: kept
    values = pd.DataFrame(_values("activation_ratio", "distance", methods, higher=False))
    meta = _meta("activation_ratio", "distance", {"assignment": 0.05, "decomposition": 0.3})
    row = headline_eligibility(values, ROLES, TRUTHS, meta).iloc[0]
    assert row["rule_a"] and row["rule_b"] and row["eligible"]


def test_rule_b_needs_agreement_with_every_truth_question():
    methods = {"arv": 0.5, "pure": 0.3, "identity": 0.0}
    values = pd.DataFrame(_values("embedding_separation", "separation_fvis", methods))
    weak = _meta("embedding_separation", "separation_fvis", {"assignment": -0.05, "decomposition": 0.3})
    row = headline_eligibility(values, ROLES, TRUTHS, weak).iloc[0]
    assert row["rule_a"] and not row["rule_b"] and not row["eligible"]


def test_truth_columns_pass_b_and_unmeasured_columns_fail_it_only_where_truth_exists():
    frames = _values("planted_recovery", "ari", {"arv": 0.3, "pure": 0.2, "identity": 0.0})
    frames += _values("output_fidelity", "top1_agreement", {"arv": 1.0, "pure": 0.9, "identity": 0.5})
    values = pd.DataFrame(frames)
    meta = _meta("embedding_separation", "separation", {"assignment": 0.2})
    table = headline_eligibility(values, ROLES, TRUTHS, meta).set_index("column")
    assert table.loc["ari", "truth"] and table.loc["ari", "eligible"]
    assert not table.loc["top1_agreement", "rule_b"]
    without_truth = headline_eligibility(values, ROLES, TRUTHS, None).set_index("column")
    assert without_truth.loc["top1_agreement", "eligible"]
    assert "not checked" in without_truth.loc["top1_agreement", "evidence"]


def test_columns_without_a_direction_are_not_judged():
    values = pd.DataFrame(_values("activation_ratio", "own_gating", {"arv": 1.0, "identity": 0.5}, higher=None))
    assert headline_eligibility(values, ROLES, TRUTHS, None).empty
