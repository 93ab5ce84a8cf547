"""Statistics: the sign-flip test and bootstrap interval on hand-computed cases, Holm on a
textbook example, paired comparisons and the leaderboard's bolding rule."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from benchmark.evaluation.statistics import (
    bootstrap_ci,
    holm,
    leaders,
    paired_comparisons,
    seed_spread,
    sign_flip_pvalue,
    target_values,
)
from benchmark.reporting.leaderboards import COLUMNS, normalise


def _brute_sign_flip(d):
    d = np.asarray(d, float)
    obs = abs(d.mean())
    hits = sum(abs((np.array(s) * d).mean()) >= obs - 1e-12 for s in itertools.product((1, -1), repeat=len(d)))
    return hits / 2 ** len(d)


def test_sign_flip_hand_computed():
    # (1, 2, 3): only all-plus / all-minus reach |mean| = 2 -> 2 / 8
    assert sign_flip_pvalue([1, 2, 3]) == pytest.approx(0.25)
    # (1, -2, 3, 4): |sum| >= 6 iff the negated subset sums to <= 2: {}, {1}, {2} -> 2 * 3 / 16
    assert sign_flip_pvalue([1, -2, 3, 4]) == pytest.approx(0.375)
    # six positive differences: smallest attainable p, 2 / 64
    assert sign_flip_pvalue([0.1, 0.4, 0.2, 0.3, 0.5, 0.6]) == pytest.approx(2 / 64)
    assert sign_flip_pvalue([0, 0, 0]) == 1.0
    assert math.isnan(sign_flip_pvalue([]))


def test_sign_flip_matches_enumeration():
    rng = np.random.default_rng(3)
    for n in (3, 5, 8):
        d = rng.normal(0.3, 1.0, n)
        assert sign_flip_pvalue(d) == pytest.approx(_brute_sign_flip(d))


def test_exact_sign_flip_equals_scipy_and_counts_ties_as_rational_enumeration_does():
    from fractions import Fraction

    from scipy.stats import permutation_test

    rng = np.random.default_rng(11)
    for n in range(2, 13):  # continuous differences: no ties, scipy's exact test is the reference
        d = rng.normal(0.2, 1.0, n)
        ref = permutation_test((d,), lambda x, axis: np.mean(x, axis=axis), vectorized=True,
                               permutation_type="samples", alternative="two-sided", n_resamples=np.inf)
        assert sign_flip_pvalue(d) == min(1.0, float(ref.pvalue))
    # rounded differences with ties; the first sums to exactly 0 (scipy: 0.984, from rounding noise)
    for d in ([1.1, -0.7, -1.0, -0.7, -0.1, 0.3, 1.1], [0.2, -1, -0.5, -0.6, 0.2, -1, 1.3, -0.4, 0.9, 1.8],
              [-0.1, 0.1, -0.3, 0.1, 0.3, 0.1, -0.3, 0.2, -0.3, 0.2, -0.1, 0.1], [1, 1, -1, 2, 0, 3, -2]):
        exact = [Fraction(str(x)) for x in d]
        observed = abs(sum(exact))
        hits = sum(abs(sum(s * x for s, x in zip(signs, exact))) >= observed
                   for signs in itertools.product((1, -1), repeat=len(d)))
        assert sign_flip_pvalue(d) == hits / 2 ** len(d)
    assert sign_flip_pvalue([1.1, -0.7, -1.0, -0.7, -0.1, 0.3, 1.1]) == 1.0


def test_sign_flip_bad_input():
    with pytest.raises(ValueError, match="finite"):
        sign_flip_pvalue([1.0, float("nan")])


def test_bootstrap_ci_hand_computed():
    # (0, 0, 0, 4): the mean is k with k ~ Binomial(4, 1/4) fours drawn; P(k = 0) = 0.32 > 0.025
    # and P(k >= 3) = 13/256 = 0.051 > 0.025 > P(k = 4) = 1/256, so the 95% interval is [0, 3]
    assert bootstrap_ci([0, 0, 0, 4], n_boot=20000) == (0.0, 3.0)
    # (0, 1): means 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4 -> [0, 1]
    assert bootstrap_ci([0, 1], n_boot=20000) == (0.0, 1.0)
    assert bootstrap_ci([2.5, 2.5, 2.5]) == (2.5, 2.5)
    assert all(math.isnan(v) for v in bootstrap_ci([1.0]))
    assert bootstrap_ci([1, 5, 2, 8], seed=4) == bootstrap_ci([1, 5, 2, 8], seed=4)


def test_holm_textbook():
    # Holm (1979) step-down: sorted p 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06,
    # 0.04 -> monotone 0.02, 0.03, 0.06, 0.06; at alpha 0.05 H4 and H1 are rejected.
    adj = holm([0.01, 0.04, 0.03, 0.005])
    assert adj == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert list(adj < 0.05) == [True, False, False, True]
    nan_kept = holm([0.01, float("nan"), 0.04])  # two hypotheses, not three
    assert nan_kept[0] == pytest.approx(0.02) and math.isnan(nan_kept[1]) and nan_kept[2] == pytest.approx(0.04)
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # 0.5 * 2 = 1.0; monotone


def test_holm_equals_statsmodels_on_random_p_values_with_ties():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    rng = np.random.default_rng(3)
    for m in (1, 2, 7, 40):
        p = rng.uniform(0, 0.2, m).round(2)  # rounding makes ties
        assert holm(p) == pytest.approx(multitest.multipletests(p, method="holm")[1], abs=1e-15)


def results(per_method: dict[str, list[float]], hib="true", seeds=None, extra=None) -> pd.DataFrame:
    rows = []
    for method, values in per_method.items():
        for i, v in enumerate(values):
            row = dict(track="planted", model="m", layer="l", dataset="d", target=f"t{i}", method=method,
                       method_params="{}", metric="rec", column="ari", value=v, higher_is_better=hib,
                       status="ok" if np.isfinite(v) else "not_applicable", reason="",
                       seed=(seeds or [0] * len(values))[i], main=True)
            row.update(extra or {})
            rows.append(row)
    cols = list(COLUMNS) + [c for c in (extra or {}) if c not in COLUMNS]
    return normalise(pd.DataFrame(rows, columns=cols))


def test_target_values_average_seeds_and_extra_seed_columns():
    df = pd.concat([results({"a": [1.0, 3.0]}, extra={"model_seed": 0}),
                    results({"a": [2.0, 5.0]}, extra={"model_seed": 1})], ignore_index=True)
    tv = target_values(df)
    assert tv["value"].tolist() == [1.5, 4.0] and tv["n_seeds"].tolist() == [2, 2]
    spread = seed_spread(df)  # seed means 2.0 and 3.5 -> sd 1.0607
    assert spread["n_seeds"].iloc[0] == 2
    assert spread["seed_sd"].iloc[0] == pytest.approx(np.std([2.0, 3.5], ddof=1))


def test_paired_comparisons_known_case():
    df = results({"good": [0.9, 0.8, 0.95, 0.85, 0.9, 0.7], "bad": [0.1, 0.2, 0.15, 0.1, 0.0, 0.3],
                  "partial": [0.5, 0.6, math.nan, math.nan, math.nan, math.nan]})
    cmp = paired_comparisons(target_values(df))
    assert len(cmp) == 3
    gb = cmp[(cmp.method_a == "good") & (cmp.method_b == "bad")].iloc[0]
    # means 0.85 and 0.141667 on all six targets; all differences positive: p = 2 / 64; three
    # testable comparisons and this is the smallest p: Holm multiplies it by 3 (not significant)
    assert gb.n_common == 6 and gb["diff"] == pytest.approx(0.85 - 0.85 / 6)
    assert gb.p == pytest.approx(2 / 64) and gb.p_holm == pytest.approx(3 * 2 / 64) and not gb.significant
    gp = cmp[(cmp.method_a == "good") & (cmp.method_b == "partial")].iloc[0]
    assert gp.n_common == 2 and gp.p == pytest.approx(0.5) and gp.better == "tie"
    assert gb.ci_low <= gb["diff"] <= gb.ci_high


def _marks(per_method, n_targets=None, hib="true"):
    df = results(per_method, hib=hib)
    tv = target_values(df)
    cmp = paired_comparisons(tv)
    means = tv.groupby("label")["value"].mean().to_dict()
    counts = tv.groupby("label")["value"].size().to_dict()
    n = n_targets or max(len(v) for v in per_method.values())
    return leaders(means, counts, n, hib == "true", cmp)


def test_bolding_significant_winner():
    marks = _marks({"win": [0.9, 0.95, 0.85, 0.9, 0.8, 0.99, 0.92, 0.88],
                    "b": [0.1, 0.2, 0.15, 0.1, 0.0, 0.3, 0.2, 0.1],
                    "c": [0.3, 0.2, 0.25, 0.4, 0.3, 0.35, 0.2, 0.1]})
    assert marks == {"win": "best"}
    lower = _marks({"win": [0.1, 0.05, 0.15, 0.1, 0.2, 0.01, 0.08, 0.12],
                    "b": [0.9, 0.8, 0.85, 0.9, 1.0, 0.7, 0.8, 0.9]}, hib="false")
    assert lower == {"win": "best"}


def test_tie_not_bolded():
    # leader a (0.5) cannot be separated from b (0.475); both beat c on all 8 targets
    # (p = 2/256, Holm x3 = 0.023): a and b are tied leaders, c is not marked
    marks = _marks({"a": [0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.9, 0.1], "b": [0.5, 0.4, 0.5, 0.4, 0.5, 0.6, 0.5, 0.4],
                    "c": [0.0, 0.0, 0.1, 0.0, 0.1, 0.0, 0.0, 0.0]})
    assert "best" not in marks.values()
    assert marks["b"] == "tied" and marks["a"] == "tied"
    assert "c" not in marks


def test_partial_coverage_never_bolded():
    # "part" has the largest mean but covers 1 of 8 targets: the leader is "full", which cannot be
    # separated from "part" on one common target, so nothing is bold
    marks = _marks({"part": [5.0] + [math.nan] * 7, "full": [0.9, 0.95, 0.85, 0.9, 0.8, 0.99, 0.92, 0.88],
                    "low": [0.1, 0.2, 0.15, 0.1, 0.0, 0.3, 0.2, 0.1]})
    assert marks.get("part") != "best" and "best" not in marks.values()
    assert marks["full"] == "tied"
    # nobody covers every target: nothing marked
    assert _marks({"x": [1.0, math.nan, 2.0], "y": [0.0, 1.0, math.nan]}) == {}


def test_seed_keys_other_than_seed():
    from benchmark.reporting.leaderboards import leaderboard

    a = results({"a": [1.0, 3.0]}).drop(columns="seed").assign(model_seed=0, method_seed=0)
    b = results({"a": [3.0, 7.0]}).drop(columns="seed").assign(model_seed=1, method_seed=0)
    board = leaderboard(pd.concat([a, b], ignore_index=True))
    # per target (2, 5) -> mean 3.5; per model seed (2, 5) -> sd 2.1213
    assert board.loc["a", ("rec", "ari", "mean")] == pytest.approx(3.5)
    assert board.loc["a", ("rec", "ari", "n_seeds")] == 2
    assert board.loc["a", ("rec", "ari", "seed_sd")] == pytest.approx(np.std([2.0, 5.0], ddof=1))


# ------------------------------------------------------------------ cluster-aware versions
def test_cluster_sign_flip_with_one_target_per_cluster_is_the_sign_flip_test():
    from benchmark.evaluation.statistics import cluster_sign_flip_pvalue

    d = np.random.default_rng(3).normal(0.2, 1.0, 11)
    assert cluster_sign_flip_pvalue(d, range(11)) == pytest.approx(sign_flip_pvalue(d), abs=1e-12)
    assert cluster_sign_flip_pvalue(d, range(11)) == pytest.approx(_brute_sign_flip(d), abs=1e-12)


def test_cluster_sign_flip_hand_computed():
    from benchmark.evaluation.statistics import cluster_sign_flip_pvalue

    # cluster sums 3 and 2: patterns +-3 +-2 give |5|, |1|, |1|, |5| -> p = 2/4
    assert cluster_sign_flip_pvalue([1, 2, 3, -1], [0, 0, 1, 1]) == pytest.approx(0.5)
    # one cluster: flipping it gives the same |mean| -> p = 1; six agreeing clusters -> 2/64
    assert cluster_sign_flip_pvalue([1, 2, 3], ["a"] * 3) == 1.0
    assert cluster_sign_flip_pvalue(np.ones(12), np.repeat(np.arange(6), 2)) == pytest.approx(2 / 64)
    with pytest.raises(ValueError, match="one cluster label per difference"):
        cluster_sign_flip_pvalue([1, 2], [0])


def test_cluster_sign_flip_beyond_the_exact_limit_is_monte_carlo():
    from benchmark.evaluation.statistics import EXACT_MAX_N, MC_RESAMPLES, cluster_sign_flip_pvalue

    p = cluster_sign_flip_pvalue(np.ones(EXACT_MAX_N + 2), range(EXACT_MAX_N + 2))
    assert p == pytest.approx(1 / (1 + MC_RESAMPLES), rel=0.5)  # exact 2 / 2^22 is far below what B draws resolve


def test_cluster_bootstrap_resamples_clusters_first():
    from benchmark.evaluation.statistics import cluster_bootstrap_ci

    values, clusters = [0.0, 0.0, 0.0, 1.0, 1.0, 1.0], ["a", "a", "a", "b", "b", "b"]
    # two clusters, constant within: the resampled mean is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4
    assert cluster_bootstrap_ci(values, clusters, seed=0) == (0.0, 1.0)
    naive = bootstrap_ci(values, seed=0)  # treating the six targets as independent is much narrower
    assert naive[0] > 0.1 and naive[1] < 0.9
    assert cluster_bootstrap_ci(values, ["x"] * 6, seed=0) == bootstrap_ci(values, seed=0)


def test_paired_comparisons_flip_whole_models_when_the_targets_come_from_several():
    rows = []
    for model in ("m@seed0", "m@seed1", "m@seed2"):
        for t in range(4):  # A beats B on all 12 targets, but only 3 models
            for label, v in (("A", 1.0 + t), ("B", 0.0)):
                rows.append(dict(track="planted", label=label, metric="x", column="v", model=model, layer="l",
                                 dataset="d", target=f"t{t}", value=v, higher_is_better=True))
    values = pd.DataFrame(rows)
    cmp = paired_comparisons(values)
    assert cmp["p"].iloc[0] == pytest.approx(2 / 8)  # 3 clusters, not 2 / 2^12
    assert int(cmp["clusters"].iloc[0]) == 3


def test_clusters_are_seed_draws_of_one_model_not_distinct_named_models():
    from benchmark.evaluation.statistics import seed_clustered

    assert seed_clustered(["world_cnn@seed0", "world_cnn@seed1", "world_cnn@seed0"])
    assert not seed_clustered(["world_cnn@seed0"])
    assert not seed_clustered(["efficientnet_lite0_photos@seed0", "efficientnet_lite1_photos@seed0"])
    assert not seed_clustered(["efficientnet_lite0_photos", "efficientnet_lite1_photos"])
    assert seed_clustered(["a@seed0", "a@seed3", "b@seed0"])


def test_two_named_models_compare_targets_as_units():
    """Two fixed models: the sign flip is per target (6 targets: p = 2/64), not per model
    (2 clusters could never reach p < 0.5)."""
    import pandas as pd

    from benchmark.evaluation.statistics import paired_comparisons

    rows = []
    for i in range(6):
        model = "lite0" if i < 3 else "lite1"
        for label, value in (("a", 1.0 + 0.1 * i), ("b", 0.0)):
            rows.append(dict(track="t", label=label, metric="m", column="c", model=model, layer="l",
                             dataset="d", target=f"x{i}", value=value, higher_is_better=True, n_seeds=1))
    cmp = paired_comparisons(pd.DataFrame(rows), n_boot=200)
    row = cmp.iloc[0]
    assert row["clusters"] == 0 and row["p"] == pytest.approx(2 / 64)
