"""Which metric columns may enter a track's headline table: the rule, as code, run on every run.

A column enters the headline table of a split track only if

(a) no no-op split reaches the median method on it: with ``m`` the median over the
    competing methods (role ``method``: the published splitting methods) of their mean over
    the track's targets, and ``z`` the best mean of a no-op split (role ``no_op``: identity,
    duplicate, random_split, nuisance_split), the column fails when ``z`` is at or beyond
    ``m`` in the column's direction. A split that does nothing useful and scores as well as
    the methods shows that the column measures something other than disentanglement; and
(b) it agrees with the planted truth: for a label-free column, the lower end of the 95%
    bootstrap CI of its Spearman correlation with EVERY truth question (assignment and
    decomposition, from :mod:`benchmark.evaluation.meta_evaluation`) is above 0. The truth
    columns themselves pass (b); a column that is neither truth nor label-free (e.g. output
    fidelity: it needs the rewritten model, not a separation score) has no evidence and fails
    (b). In a run without planted truth (b) cannot be checked: the column is then judged by
    (a) alone and the evidence column says so.

The label floor (role ``label_floor``, class_gate) is deliberately NOT part of the rule: a
column on which the label floor beats the methods stays in the table, and that is printed as
a finding. Detection-track columns (polysemanticity classifiers) have no no-op splits to
check against: every column with a direction is eligible there. Roles come from the methods'
``role`` class attribute (:data:`benchmark.core.plugins.ROLES`), passed in as a mapping.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import pandas as pd

COLUMNS = ["track", "metric", "column", "truth", "median_method", "best_no_op", "no_op", "rule_a",
           "spearman_lo", "rule_b", "eligible", "evidence"]


def method_of(label: str) -> str:
    """The method name of a leaderboard label (``pure(k=3)`` -> ``pure``)."""
    return str(label).split("(", 1)[0]


def metric_name(label: str) -> str:
    """The registered metric of a metric label (``factor_gamma[p=0.75]`` -> ``factor_gamma``)."""
    return str(label).split("[", 1)[0]


def headline_eligibility(values: pd.DataFrame, roles: Mapping[str, str], truths: set[tuple[str, str]],
                         meta: pd.DataFrame | None) -> pd.DataFrame:
    """One row per (track, metric, column) with a direction: the evidence and the verdict.

    ``values``: per-target values (:func:`benchmark.evaluation.statistics.target_values`);
    ``roles``: method name -> role; ``truths``: the (metric, column) truth questions;
    ``meta``: the meta-evaluation table (one row per label-free column and truth), or None.
    """
    rows = []
    for (track, metric, column), g in values.groupby(["track", "metric", "column"], sort=False):
        higher = g["higher_is_better"].iloc[0]
        if higher is None or (isinstance(higher, float) and math.isnan(higher)):
            continue
        means = g.groupby("label", sort=False)["value"].mean()
        role = means.index.map(lambda label: roles.get(method_of(label), "method"))
        methods, no_ops = means[role == "method"], means[role == "no_op"]
        is_truth = (metric_name(metric), column) in truths
        detection = track == "detection"
        median = float(np.median(methods)) if len(methods) else math.nan
        best_no_op, no_op = math.nan, ""
        if len(no_ops):
            pick = no_ops.idxmax() if higher else no_ops.idxmin()
            best_no_op, no_op = float(no_ops[pick]), str(pick)
        if detection:
            rule_a, why_a = True, "detection column (no no-op split takes part)"
        elif not len(methods):
            rule_a, why_a = False, "no method scored: (a) cannot be checked"
        elif not len(no_ops):
            rule_a, why_a = True, "no no-op split scored"
        else:
            reaches = best_no_op >= median if higher else best_no_op <= median
            rule_a = not reaches
            why_a = (f"{no_op} {best_no_op:.3g} reaches the median method {median:.3g}" if reaches
                     else f"best no-op {no_op} {best_no_op:.3g} short of the median method {median:.3g}")
        spearman_lo, rule_b, why_b = math.nan, True, "a planted-truth score"
        if not is_truth and not detection:
            found = _agreement(meta, metric, column)
            if meta is None:
                rule_b, why_b = True, "(b) not checked: no planted truth in this run"
            elif found is None:
                rule_b, why_b = False, "no rank agreement with the truth measured (not a label-free score)"
            else:
                spearman_lo = float(min(found.values()))
                rule_b = bool(np.isfinite(spearman_lo) and spearman_lo > 0)
                why_b = "Spearman CI low vs " + ", ".join(f"{t} {v:.2f}" for t, v in found.items())
        elif detection:
            why_b = "detection column"
        rows.append(dict(track=track, metric=metric, column=column, truth=is_truth, median_method=median,
                         best_no_op=best_no_op, no_op=no_op, rule_a=rule_a, spearman_lo=spearman_lo, rule_b=rule_b,
                         eligible=bool(rule_a and rule_b), evidence=f"{why_a}; {why_b}"))
    return pd.DataFrame(rows, columns=COLUMNS)


def _agreement(meta: pd.DataFrame | None, metric: str, column: str) -> dict[str, float] | None:
    """truth -> lower CI end of the column's Spearman with it, or None without evidence."""
    if meta is None or meta.empty:
        return None
    mine = meta[(meta["metric"] == metric) & (meta["column"] == column)]
    if mine.empty:
        return None
    return {str(r.truth): float(r.spearman_lo) for r in mine.itertuples()}
