"""The statistical report of a run folder: per-target CSV, paired comparisons, CD diagram,
detection classifier table (hand-made results; no model needed)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from benchmark.evaluation.statistics import paired_comparisons, target_values
from benchmark.reporting.detection_table import detection_table
from benchmark.reporting.leaderboards import COLUMNS, normalise
from benchmark.reporting.statistical_report import cd_panels, per_target_table, write_report
from metrics._detection import classifier_report


def _row(track, method, metric, column, target, value, hib="true", main=True, seed=0, status=None):
    return dict(track=track, model="m", layer="l", dataset="d", target=target, method=method, method_params="{}",
                metric=metric, column=column, value=value, higher_is_better=hib, main=main, seed=seed,
                status=status or ("ok" if np.isfinite(value) else "not_applicable"), reason="")


def results() -> pd.DataFrame:
    rows = []
    good = [0.9, 0.8, 0.95, 0.85, 0.9, 0.7, 0.99, 0.93]
    for seed, shift in ((0, 0.0), (1, 0.02)):
        for i, v in enumerate(good):
            rows.append(_row("planted", "win", "rec", "ari", f"t{i}", v + shift, seed=seed))
            rows.append(_row("planted", "lose", "rec", "ari", f"t{i}", v - 0.5, seed=seed))
            rows.append(_row("planted", "part", "rec", "ari", f"t{i}", 0.5 if i < 3 else math.nan, seed=seed))
            rows.append(_row("planted", "win", "rec", "baseline", f"t{i}", 1.0, hib="", seed=seed))
    truth = np.array([True, True, False, False, True, False, True, False])
    for method, scores in (("arv", [0.1, 0.2, 0.6, 0.7, 0.3, 0.9, 0.4, 0.8]), ("pure", [0.5] * 8)):
        out = classifier_report(truth, np.array(scores), 0.5, (0.3, 0.5), n_boot=100)
        rows += [_row("detection", method, "wordnet_gamma[wup<0.65]", k, "*", v,
                      main=k in ("auroc", "auprc", "precision", "recall", "f1")) for k, v in out.items()]
        rows.append(_row("detection", method, "wordnet_gamma[wup<0.65]", "pairs_unscored", "*", 2.0, main=False))
    for c in ("auroc", "auprc", "precision", "recall", "f1"):
        rows.append(_row("detection", "kmeans", "wordnet_gamma[wup<0.65]", c, "*", math.nan))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def test_per_target_table_keeps_every_value_and_seed_columns():
    df = results().assign(model_seed=3)
    table = per_target_table(df)
    assert len(table) == int(normalise(df)["main"].sum())
    assert {"seed", "model_seed", "value", "status", "reason"} <= set(table.columns)
    assert set(table["label"]) == {"win", "lose", "part", "arv", "pure", "kmeans"}


def test_comparisons_and_cd_panels():
    values = target_values(normalise(results()))
    cmp = paired_comparisons(values)
    row = cmp[(cmp.track == "planted") & (cmp.method_a == "win") & (cmp.method_b == "lose")].iloc[0]
    # seeds averaged first: the difference is 0.51 on all 8 targets -> p = 2/256, three comparisons
    assert row["n_common"] == 8 and row["diff"] == pytest.approx(0.51) and row["p"] == pytest.approx(2 / 256)
    assert row["better"] == "win"
    assert "baseline" not in set(cmp["column"])  # no direction, no test
    panels = cd_panels(values, cmp, "planted")
    assert len(panels) == 1
    name, ranks, p = panels[0]
    assert set(ranks) == {"win", "lose", "part"} and "3 targets" in name  # complete blocks: t0..t2
    assert ranks["win"] == 1.0 and ranks["lose"] == 3.0


def test_detection_table_rows_and_trivial_detectors():
    table = detection_table(results())
    assert list(table["detector"]) == ["arv", "pure", "always polysemantic (trivial)", "random scores (trivial)"]
    arv = table.iloc[0]
    assert arv["auroc"] == 1.0 and arv["pairs"] == 8 and arv["pairs_unscored"] == 2 and arv["prevalence"] == 0.5
    assert table.iloc[1]["auroc"] == 0.5  # constant score
    always = table.iloc[2]
    assert always["precision"] == 0.5 and always["recall"] == 1.0 and always["auprc"] == 0.5


def test_write_report(tmp_path):
    paths = write_report(results(), tmp_path)
    for name in ("per_target.csv", "comparisons.csv", "comparisons.md", "detection.csv", "detection.md", "report.md"):
        assert paths[name].is_file(), name
    assert (tmp_path / "figures" / "cd_planted.png").is_file() and (tmp_path / "figures" / "cd_planted.pdf").is_file()
    md = paths["comparisons.md"].read_text()
    assert "| win | lose | 8 | 0.510 [" in md and "win better" in md
    det = paths["detection.md"].read_text()
    assert "| arv | 8 | 2 | 4 (0.500) | 1.000 [" in det and "always polysemantic (trivial)" in det
    assert "No polysemanticity score (not in the table): kmeans." in det
    assert "γ = 0.30" in det
    report = paths["report.md"].read_text()
    assert report.index("# Detection track") < report.index("# Paired comparisons") < report.index("# Per-target")
    assert not list(tmp_path.glob(".*.tmp"))


def test_single_target_cells_take_the_metrics_own_interval():
    from benchmark.reporting.leaderboards import leaderboard

    df = results()
    board = leaderboard(df, "detection")
    own = df[(df.method == "arv") & (df.column.isin(["auroc_ci_low", "auroc_ci_high"]))].set_index("column")["value"]
    assert board.loc["arv", ("wordnet_gamma[wup<0.65]", "auroc", "ci_low")] == own["auroc_ci_low"]
    assert board.loc["arv", ("wordnet_gamma[wup<0.65]", "auroc", "ci_high")] == own["auroc_ci_high"]
    assert math.isnan(board.loc["arv", ("wordnet_gamma[wup<0.65]", "f1", "ci_low")])  # none reported: none shown
