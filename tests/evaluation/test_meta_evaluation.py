"""Meta-evaluation (benchmark.evaluation.meta_evaluation): rank agreement against known answers, and the
whole path on a small planted case (TinyNet) with the oracle/duplicate calibration."""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from benchmark.core.registry import METHODS, METRICS
from benchmark.core.types import NotApplicable, Target
from benchmark.evaluation.meta_evaluation import (
    COLUMNS,
    _kendall_resampled,
    meta_evaluation,
    rank_agreement,
    write_meta_evaluation,
)
from benchmark.planting.merge import plant
from tests.fakes import tiny_context


def test_rank_agreement_known_answers():
    truth = np.arange(10.0)
    same = rank_agreement(truth ** 3, truth, bootstrap=200)
    assert same["spearman"] == pytest.approx(1.0) and same["kendall"] == pytest.approx(1.0)
    assert same["spearman_lo"] == pytest.approx(1.0)
    flipped = rank_agreement(-truth, truth, bootstrap=200)
    assert flipped["spearman"] == pytest.approx(-1.0)
    rng = np.random.default_rng(1)
    x = rng.normal(size=40)
    y = x + rng.normal(size=40)
    got = rank_agreement(x, y, bootstrap=300)
    assert got["spearman"] == pytest.approx(stats.spearmanr(x, y).statistic)
    assert got["kendall"] == pytest.approx(stats.kendalltau(x, y).statistic)
    assert got["spearman_lo"] < got["spearman"] < got["spearman_hi"]
    assert rank_agreement(x, y, bootstrap=300) == got  # seeded
    tied = rank_agreement(np.round(x), np.round(y), bootstrap=10)  # ties: tau-b and average ranks
    assert tied["kendall"] == pytest.approx(stats.kendalltau(np.round(x), np.round(y)).statistic)
    assert tied["spearman"] == pytest.approx(stats.spearmanr(np.round(x), np.round(y)).statistic)
    with pytest.raises(ValueError):
        rank_agreement(x, y[:5])


def test_resampled_kendall_equals_scipy_on_every_resample():
    """The bootstrap's quadratic-form tau-b is scipy's tau-b of each resampled vector, ties
    (from rounding and from drawing an item twice) included."""
    rng = np.random.default_rng(3)
    x = np.round(rng.normal(size=30), 1)
    y = np.round(x + rng.normal(size=30), 0)
    idx = rng.integers(0, 30, (25, 30))
    got = _kendall_resampled(x, y, idx)
    want = [stats.kendalltau(x[i], y[i]).statistic for i in idx]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


METHODS_HERE = ("oracle", "duplicate", "identity", "random_split", "activation_kmeans")
METRICS_HERE = ("planted_recovery", "activation_ratio")


@functools.lru_cache(maxsize=1)
def planted_rows() -> pd.DataFrame:
    base = tiny_context(n=48)
    targets = []
    planted = {}
    model = base.model
    for a, b in ((0, 3), (1, 4)):
        model, truth = plant(model, "conv2", [(a, b)], classes=[((0,), (1,))])
        planted.update(truth)
        targets.append(Target("tiny", "conv2", a, concepts=((0,), (1,))))
    ctx = dataclasses.replace(base, model=model, planted=planted)
    rows = []
    for method in METHODS_HERE:
        cls = METHODS.get(method)
        names = {f.name for f in dataclasses.fields(cls)}
        inst = cls(**({"n_ref": 10} if "n_ref" in names else {}))
        for target in targets:
            try:
                split = inst.fit(ctx, target)
            except NotApplicable:
                continue
            for metric_name in METRICS_HERE:
                metric = METRICS.get(metric_name)()
                declared = {c.name: c for c in metric.columns}
                try:
                    values = metric.score(split, ctx)
                except NotApplicable:
                    continue
                for col, val in values.items():
                    hib = declared[col].higher_is_better if col in declared else None
                    rows.append(dict(track="planted", method=method, method_params="{}", target=target.key,
                                     metric=metric.label, column=col, value=val, status="ok", main=col in declared,
                                     higher_is_better="" if hib is None else str(hib).lower()))
    return pd.DataFrame(rows)


def test_table_columns_and_calibration_on_a_small_planted_case(tmp_path):
    results = planted_rows()
    table, calib = meta_evaluation(results, bootstrap=100)
    assert list(table.columns) == COLUMNS
    assert set(table["metric"]) == {"activation_ratio"}  # planted_recovery is the truth, not a candidate
    assert set(table["column"]) >= {"distance", "distance_pooled"}
    assert (table["direction"] == "lower").all()
    row = table[table["column"] == "distance"].iloc[0]
    assert row["n"] >= 4 and -1.0 <= row["spearman"] <= 1.0
    cal = calib.set_index("method")["mean"]
    assert cal["oracle"] == pytest.approx(1.0, abs=1e-6)
    assert cal["duplicate"] == pytest.approx(0.0, abs=1e-6)
    assert cal["identity"] == pytest.approx(0.0, abs=1e-6)
    path = write_meta_evaluation(results, tmp_path, bootstrap=50)
    assert path is not None and list(pd.read_csv(path).columns) == COLUMNS
    assert (tmp_path / "meta_evaluation.md").read_text().startswith("Rank agreement")
    assert write_meta_evaluation(results.assign(track="pairs"), tmp_path / "none") is None
