"""Metric sanity on planted targets, parametrised over the METRICS registry: every column a
split metric declares in ``calibrated_columns`` (it claims to measure disentanglement) must
score the ``oracle`` better than ``random_split``, and ``duplicate``, ``identity`` and
``nuisance_split`` no better than no split (the ``identity`` value of the same target).
A metric with no calibrated column must say why in ``not_calibrated``.

Setting: the trained world CNN, two planted channel pairs (as tests/metrics/test_planted_separation.py),
methods fit on 1,000 validation images, metrics on 600 others. Sampling allowance: a trivial
split may beat no split by at most 15% of the oracle's margin over no split (the Hungarian
matching of activation_ratio lets a random routing look slightly better than 0.5).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from benchmark.core.registry import METHODS, METRICS
from benchmark.core.types import NotApplicable

SPLIT_METRICS = [n for n in METRICS.names() if METRICS.get(n).scope == "split"]
TRIVIAL = ("duplicate", "identity", "nuisance_split")
ALLOWANCE = 0.15


@pytest.mark.parametrize("name", SPLIT_METRICS)
def test_every_split_metric_declares_its_calibration(name):
    cls = METRICS.get(name)
    calibrated = cls.calibrated_columns  # declared by the Metric base class (default: none)
    declared = {c.name for c in cls.columns}
    assert set(calibrated) <= declared, f"{name}: calibrated columns {calibrated} are not all declared"
    if not calibrated:
        assert cls.not_calibrated.strip(), f"{name}: say why it has no calibrated column (not_calibrated)"


@pytest.fixture(scope="module")
def planted(world_model, world_val):
    from tests.fakes import planted_world_context

    return planted_world_context(world_model, world_val, range(1000), range(1000, 1600), num_pairs=2, batch_size=200)


def _metric(name):
    metric = METRICS.get(name)()
    if name == "embedding_separation":
        metric = dataclasses.replace(metric, fvis_per_neuron=0)  # the crops path only
    return metric


_MEMO: dict = {}


def _scores(metric_name, method_name, ctx, targets):
    key = (id(ctx), metric_name, method_name)
    if key not in _MEMO:
        _MEMO[key] = _compute(metric_name, method_name, ctx, targets)
    return _MEMO[key]


def _compute(metric_name, method_name, ctx, targets):
    metric, method = _metric(metric_name), METHODS.get(method_name)()
    out = []
    for target in targets:
        try:
            out.append(metric.score(method.fit(ctx, target), ctx))
        except NotApplicable:
            out.append({})
    return out


CALIBRATED = [(n, c) for n in SPLIT_METRICS for c in METRICS.get(n).calibrated_columns]


@pytest.mark.slow
@pytest.mark.parametrize("metric_name,column", CALIBRATED)
def test_oracle_beats_random_and_trivial_splits_are_no_better_than_no_split(planted, metric_name, column):
    ctx, targets = planted
    sign = 1.0 if {c.name: c for c in METRICS.get(metric_name).columns}[column].higher_is_better else -1.0
    tt = tuple(targets)

    def values(method):
        return [s.get(column) for s in _scores(metric_name, method, ctx, tt)]

    oracle, random, none = values("oracle"), values("random_split"), values("identity")
    scored = [i for i in range(len(targets)) if None not in (oracle[i], random[i], none[i])]
    assert scored, f"{metric_name}/{column} scored no planted target for oracle, random_split and identity"
    o, r, n = (np.array([v[i] for i in scored]) * sign for v in (oracle, random, none))
    assert o.mean() > r.mean(), f"oracle {o.mean():.3f} <= random_split {r.mean():.3f} (sign-adjusted)"
    margin = max(float((o - n).mean()), 0.0)
    assert margin > 0, f"the oracle does not beat no split on {metric_name}/{column}"
    for trivial in TRIVIAL:
        got = values(trivial)
        t = np.array([got[i] for i in scored if got[i] is not None]) * sign
        base = np.array([n[j] for j, i in enumerate(scored) if got[i] is not None])
        if t.size:
            assert (t - base).mean() <= ALLOWANCE * margin + 1e-9, (
                f"{trivial} scores {(t - base).mean():+.3f} over no split on {metric_name}/{column} "
                f"(oracle margin {margin:.3f})")
