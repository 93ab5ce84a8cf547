"""Contract tests parametrised over EVERY registered metric (a new metric gets them free)
and, for split metrics, every registered method on the contract world of tests/fakes.py.

Each metric subclasses the Metric interface as a frozen, hashable dataclass with defaults for
all fields, declares its columns and scope, and returns finite floats for every declared
column, inside the declared bounds. Where every situation it requires is offered (the
contract world offers all of them; "surgery" holds for surgery splits only, "residual" for
splits with a residual) it must apply;
where one is missing it must say NotApplicable. No test here skips. Embedding separation
runs with a transparent fake embedder (no judge network here).
"""
from __future__ import annotations

import dataclasses
import functools
import math

import pandas as pd
import pytest
import torch

import metrics.embedding_separation as es
from benchmark.core.plugins import SITUATIONS, SPLIT_SITUATIONS, Metric
from benchmark.core.registry import METHODS, METRICS
from benchmark.core.types import Column, NotApplicable
from tests.fakes import build_plugin, contract_world, lacking

SPLIT_METRICS = [n for n in METRICS.names() if METRICS.get(n).scope == "split"]
DETECTION_METRICS = [n for n in METRICS.names() if METRICS.get(n).scope == "detection"]


def planted_context():
    return contract_world()


@functools.lru_cache(maxsize=None)
def fitted(method_name: str, situation: str | None = None):
    ctx, target = lacking(situation) if situation else planted_context()
    return build_plugin(METHODS.get(method_name)).fit(ctx, target)


def offered(metric_cls, split) -> bool:
    """Whether every situation the metric requires holds for this split on the full world."""
    return all(s not in SPLIT_SITUATIONS or SPLIT_SITUATIONS[s](split) for s in metric_cls.requires)


@pytest.mark.parametrize("name", METRICS.names())
def test_metric_declares_its_interface(name):
    cls = METRICS.get(name)
    assert issubclass(cls, Metric) and set(cls.requires) <= set(SITUATIONS)
    metric = cls()  # every field has a default
    assert dataclasses.is_dataclass(metric) and cls.__dataclass_params__.frozen
    hash(metric)
    assert cls.scope in ("split", "detection")
    assert cls.columns and all(isinstance(c, Column) for c in cls.columns)
    assert len({c.name for c in cls.columns}) == len(cls.columns)
    assert isinstance(metric.label, str) and metric.label.startswith(name)
    assert cls.__module__.split(".")[-1] == name  # one file per metric
    assert (__import__(cls.__module__, fromlist=["_"]).__doc__ or "").strip()


def flat_embedder():
    class Flat:
        name = "flat"

        def embed(self, images):  # native-size crops: a fixed-size vector per image
            return torch.nn.functional.interpolate(images, size=(4, 4), mode="bilinear").flatten(1)

    return Flat()


def small(metric_name: str):
    metric = METRICS.get(metric_name)()
    if metric_name == "embedding_separation":
        metric = dataclasses.replace(metric, pool_size=8, fvis_per_neuron=0)
    return metric


def check_columns(metric, out: dict) -> None:
    assert any(c.name in out for c in metric.columns), f"{metric.label} reported none of its columns"
    for column in metric.columns:
        if column.optional and column.name not in out:
            continue
        assert column.name in out, f"{metric.label} did not report {column.name}"
        value = out[column.name]
        lo, hi = column.bounds
        assert (lo is None or value >= lo - 1e-9) and (hi is None or value <= hi + 1e-9), (column, value)
    assert all(isinstance(v, float) and math.isfinite(v) for v in out.values()), out


@pytest.mark.parametrize("method_name", METHODS.names())
@pytest.mark.parametrize("metric_name", SPLIT_METRICS)
def test_split_metric_on_every_method(metric_name, method_name, monkeypatch):
    split = fitted(method_name)
    monkeypatch.setattr(es, "_build_embedder", lambda name, args: flat_embedder())
    metric = small(metric_name)
    ctx, _ = planted_context()
    if not offered(type(metric), split):  # e.g. a surgery-only metric on a gating split
        with pytest.raises(NotApplicable):
            metric.score(split, ctx)
        return
    try:
        out = metric.score(split, ctx)
    except NotApplicable as why:
        pytest.fail(f"{metric_name} must apply to {method_name}'s split where every situation it "
                    f"requires is offered, but: {why}")
    check_columns(metric, out)


REQUIRED = [(n, s) for n in SPLIT_METRICS for s in sorted(METRICS.get(n).requires) if s not in SPLIT_SITUATIONS]


@pytest.mark.parametrize(("metric_name", "situation"), REQUIRED)
def test_split_metric_refuses_where_a_declared_situation_is_missing(metric_name, situation, monkeypatch):
    monkeypatch.setattr(es, "_build_embedder", lambda name, args: flat_embedder())
    # the identity split, fitted where the situation is missing (or kept from the full world
    # when only the metric's context lacks it)
    split = fitted("identity", situation)
    ctx, target = lacking(situation)
    split = dataclasses.replace(split, target=target, concepts=None) if situation == "concepts" else split
    with pytest.raises(NotApplicable):
        small(metric_name).score(split, ctx)


def detection_table(ctx) -> pd.DataFrame:
    """Polysemanticity scores of every (channel, class pair) among four classes."""
    rows = []
    g = torch.Generator().manual_seed(0)
    for channel in range(ctx.stats.num_channels):
        for a, b in ((0, 4), (1, 9), (2, 3), (5, 12), (6, 7), (8, 15)):
            rows.append(dict(channel=channel, concept_a=(a,), concept_b=(b,), score=float(torch.rand(1, generator=g))))
    return pd.DataFrame(rows, columns=["channel", "concept_a", "concept_b", "score"])


@pytest.mark.parametrize("metric_name", DETECTION_METRICS)
def test_detection_metric_on_a_score_table(metric_name):
    metric = METRICS.get(metric_name)()
    ctx, _ = planted_context()
    try:
        out = metric.score(detection_table(ctx), ctx)
    except NotApplicable as why:
        pytest.fail(f"{metric_name} must apply where every situation it requires is offered, but: {why}")
    check_columns(metric, out)
    for situation in metric.requires:
        other, _ = lacking(situation)
        with pytest.raises(NotApplicable):
            metric.score(detection_table(other), other)


def test_surgery_is_exact_and_oracle_recovers_the_plant():
    ctx, _ = planted_context()
    if "arv_surgery" in METHODS.names():
        out = METRICS.get("output_fidelity")().score(fitted("arv_surgery"), ctx)
        assert out["max_abs_logit_diff"] < 1e-4 and out["top1_agreement"] == 1.0
    if "oracle" in METHODS.names():
        out = METRICS.get("planted_recovery")().score(fitted("oracle"), ctx)
        assert out["recovery"] == pytest.approx(1.0, abs=1e-6)
        assert out["correlation"] == pytest.approx(1.0, abs=1e-6)
    if "identity" in METHODS.names():
        with torch.no_grad():
            with pytest.raises(NotApplicable):
                METRICS.get("residual_energy")().score(fitted("identity"), ctx)
