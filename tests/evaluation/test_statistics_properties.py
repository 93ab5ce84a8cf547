"""Properties of the statistics (Hypothesis): the sign-flip tests are symmetric, order-free,
inside (0, 1], 1 on all-zero differences and never below the smallest attainable p; the
cluster test with one unit per cluster is the plain test; clusters of one label are a
relabelling away from any other names; bootstrap intervals are ordered and inside the data's
range (one point when the data are constant); Holm never lowers a p, stays <= 1 and keeps
the order of the raw p-values."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmark.evaluation.statistics import (
    bootstrap_ci,
    cluster_bootstrap_ci,
    cluster_sign_flip_pvalue,
    holm,
    sign_flip_pvalue,
)

FAST = settings(max_examples=60, deadline=None, derandomize=True)
values = st.floats(min_value=-100, max_value=100, allow_nan=False, allow_infinity=False, width=32)
diffs = st.lists(values, min_size=1, max_size=12)


@FAST
@given(d=diffs, data=st.data())
def test_sign_flip_is_symmetric_order_free_and_bounded(d, data):
    p = sign_flip_pvalue(d)
    assert 0 < p <= 1
    assert p >= 2 / 2 ** len(d) - 1e-12 or not any(d)
    assert sign_flip_pvalue([-x for x in d]) == pytest.approx(p)
    order = data.draw(st.permutations(range(len(d))))
    assert sign_flip_pvalue([d[i] for i in order]) == pytest.approx(p)
    assert sign_flip_pvalue([0.0] * len(d)) == 1.0


@FAST
@given(d=diffs)
def test_cluster_sign_flip_with_singleton_clusters_is_the_plain_test(d):
    assert cluster_sign_flip_pvalue(d, list(range(len(d)))) == pytest.approx(sign_flip_pvalue(d), abs=1e-9)


@FAST
@given(d=st.lists(values, min_size=2, max_size=12), data=st.data())
def test_cluster_names_do_not_matter(d, data):
    clusters = data.draw(st.lists(st.integers(0, 3), min_size=len(d), max_size=len(d)))
    renamed = [f"model-{7 - c}" for c in clusters]
    p = cluster_sign_flip_pvalue(d, clusters)
    assert 0 < p <= 1 and cluster_sign_flip_pvalue(d, renamed) == pytest.approx(p)
    assert p >= 2 / 2 ** len(set(clusters)) - 1e-12 or not any(d)


@FAST
@given(x=st.lists(values, min_size=2, max_size=30), seed=st.integers(0, 5))
def test_bootstrap_intervals_are_ordered_and_inside_the_data(x, seed):
    lo, hi = bootstrap_ci(x, seed=seed, n_boot=400)
    assert min(x) - 1e-9 <= lo <= hi <= max(x) + 1e-9
    c = x[0]
    assert bootstrap_ci([c] * len(x), seed=seed, n_boot=400) == pytest.approx((c, c))
    clusters = [i % 3 for i in range(len(x))]
    clo, chi = cluster_bootstrap_ci(x, clusters, seed=seed, n_boot=400)
    assert min(x) - 1e-9 <= clo <= chi <= max(x) + 1e-9


@FAST
@given(p=st.lists(st.floats(0, 1), min_size=1, max_size=15))
def test_holm_never_lowers_stays_below_one_and_keeps_the_order(p):
    adjusted = holm(p)
    raw = np.asarray(p)
    assert (adjusted >= raw - 1e-15).all() and (adjusted <= 1).all()
    order = np.argsort(raw, kind="stable")
    assert (np.diff(adjusted[order]) >= -1e-15).all()
