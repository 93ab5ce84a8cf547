"""Contract tests parametrised over EVERY registered metric (a new metric gets them free)
and, for split metrics, every registered method on a channel planted in TinyNet.

Each metric is a frozen, hashable dataclass with defaults for all fields, declares its
columns and scope, and either raises NotApplicable or returns finite floats for every
declared column, inside the declared bounds. Surgery must be exact (output fidelity).
Embedding separation runs with a transparent fake embedder (no judge network here).
"""
from __future__ import annotations

import dataclasses
import functools
import math

import pytest
import torch

import metrics.embedding_separation as es
from benchmark.core.registry import METHODS, METRICS
from benchmark.core.types import Column, Context, NotApplicable, Target
from benchmark.engine.capture import CaptureSpec, capture
from benchmark.planting.merge import plant
from tests.fakes import TinyNet, random_images

LAYER, PAIR = "conv2", (1, 4)  # channel 1 passes the tau filter on every class here
CONCEPTS = ((0,), (1,))
SPLIT_METRICS = [n for n in METRICS.names() if METRICS.get(n).scope == "split"]


@functools.lru_cache(maxsize=1)
def planted_context() -> tuple[Context, Target]:
    base = TinyNet(seed=0).eval()
    fit = random_images(n=48, num_classes=4, seed=0)
    heldout = random_images(n=24, num_classes=4, seed=100)
    model, truth = plant(base, LAYER, [PAIR], classes=[CONCEPTS])
    stats = capture(model, fit, CaptureSpec(LAYER, top_k=16, tau=0.03), progress=False)
    ctx = Context(model=model, model_name="tiny", layer=LAYER, fit=fit, heldout=heldout, stats=stats,
                  batch_size=16, seed=0, planted=truth)
    return ctx, Target("tiny", LAYER, PAIR[0], concepts=CONCEPTS)


@functools.lru_cache(maxsize=None)
def fitted(method_name: str):
    ctx, target = planted_context()
    cls = METHODS.get(method_name)
    names = {f.name for f in dataclasses.fields(cls)}
    method = cls(**({"n_ref": 16} if "n_ref" in names else {}))
    try:
        return method.fit(ctx, target)
    except NotApplicable as why:
        return why


@pytest.mark.parametrize("name", METRICS.names())
def test_metric_declares_its_interface(name):
    cls = METRICS.get(name)
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


@pytest.mark.parametrize("method_name", METHODS.names())
@pytest.mark.parametrize("metric_name", SPLIT_METRICS)
def test_split_metric_on_every_method(metric_name, method_name, monkeypatch):
    split = fitted(method_name)
    if isinstance(split, NotApplicable):
        pytest.skip(f"{method_name} does not apply: {split}")
    monkeypatch.setattr(es, "_build_embedder", lambda name, args: flat_embedder())
    metric = METRICS.get(metric_name)()
    if metric_name == "embedding_separation":
        metric = dataclasses.replace(metric, pool_size=8, fvis_per_neuron=0)
    ctx, _ = planted_context()
    try:
        out = metric.score(split, ctx)
    except NotApplicable as why:
        assert str(why), "NotApplicable needs a reason"
        return
    assert any(c.name in out for c in metric.columns), f"{metric_name} reported none of its columns"
    for column in metric.columns:
        if column.optional and column.name not in out:
            continue
        assert column.name in out, f"{metric_name} did not report {column.name}"
        value = out[column.name]
        lo, hi = column.bounds
        assert (lo is None or value >= lo - 1e-9) and (hi is None or value <= hi + 1e-9), (column, value)
    assert all(isinstance(v, float) and math.isfinite(v) for v in out.values()), out


def test_surgery_is_exact_and_oracle_recovers_the_plant():
    ctx, _ = planted_context()
    if "arv_surgery" in METHODS.names() and not isinstance(fitted("arv_surgery"), NotApplicable):
        out = METRICS.get("output_fidelity")().score(fitted("arv_surgery"), ctx)
        assert out["max_abs_logit_diff"] < 1e-4 and out["top1_agreement"] == 1.0
    if "oracle" in METHODS.names():
        out = METRICS.get("planted_recovery")().score(fitted("oracle"), ctx)
        assert out["recovery"] == pytest.approx(1.0, abs=1e-6)
        assert out["correlation"] == pytest.approx(1.0, abs=1e-6)
    if "identity" in METHODS.names() and not isinstance(fitted("identity"), NotApplicable):
        with torch.no_grad():
            with pytest.raises(NotApplicable):
                METRICS.get("residual_energy")().score(fitted("identity"), ctx)
