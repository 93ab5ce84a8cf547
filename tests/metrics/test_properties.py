"""Properties of every split metric, drawn by Hypothesis over the registered methods' splits on
the contract world (tests/fakes.py):

* the ORDER of the virtual neurons (permuted with their concepts, references and directions)
  never changes a main column;
* the columns a metric declares in ``scale_invariant`` do not change when every virtual
  neuron is multiplied by one positive factor (residuals keep the recomposition exact);
* values stay inside the declared bounds and are finite, also on degenerate splits
  (constant virtual neurons, all-zero neurons): a metric answers or says NotApplicable,
  never NaN.
"""
from __future__ import annotations

import dataclasses
import math
from unittest import mock

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import metrics.embedding_separation as es
from benchmark.core.registry import METHODS, METRICS
from benchmark.core.types import NotApplicable, Split
from tests.fakes import build_plugin
from tests.metrics.test_contracts import SPLIT_METRICS, check_columns, fitted, flat_embedder, planted_context, small

PROPERTY = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TOL = 1e-6


def _score(metric, split):
    ctx, _ = planted_context()
    with mock.patch.object(es, "_build_embedder", lambda name, args: flat_embedder()):
        try:
            return metric.score(split, ctx)
        except NotApplicable:
            return None


def permuted(split: Split, order: list[int]) -> Split:
    idx = torch.tensor(order)
    return dataclasses.replace(
        split, virtual_fn=lambda x: split.virtual_fn(x)[:, idx],
        reference_ids=tuple(split.reference_ids[i] for i in order) if split.reference_ids else (),
        concepts=tuple(split.concepts[i] for i in order) if split.concepts else split.concepts,
        directions=None if split.directions is None else split.directions[idx], info={})


def scaled(split: Split, factor: float) -> Split:
    """Every virtual neuron times ``factor``; a residual takes up the rest, so the recomposition
    (sum or dictionary) stays exact (a gating split has no residual to adjust)."""
    residual = split.residual_fn
    if residual is not None:
        def residual(x, base=split.residual_fn):  # noqa: E306
            return base(x) + (1 - factor) * split.virtual_fn(x).sum(1)
    return dataclasses.replace(split, virtual_fn=lambda x: factor * split.virtual_fn(x), residual_fn=residual,
                               info={})


def _main(metric, out: dict) -> dict:
    return {c.name: out[c.name] for c in metric.columns if c.name in out}


@PROPERTY
@given(method=st.sampled_from(METHODS.names()), metric_name=st.sampled_from(SPLIT_METRICS), data=st.data())
def test_no_metric_depends_on_the_order_of_the_virtual_neurons(method, metric_name, data):
    split = fitted(method)
    order = data.draw(st.permutations(list(range(split.k))), label="order")
    metric = small(metric_name)
    first, second = _score(metric, split), _score(metric, permuted(split, order))
    assert (first is None) == (second is None)
    if first is not None:
        a, b = _main(metric, first), _main(metric, second)
        assert a.keys() == b.keys()
        for key in a:
            assert math.isclose(a[key], b[key], rel_tol=TOL, abs_tol=TOL), (method, metric_name, key, order)


INVARIANT = [n for n in SPLIT_METRICS if METRICS.get(n).scale_invariant]


def test_scale_invariance_is_claimed_where_the_definition_gives_it():
    assert {n: METRICS.get(n).scale_invariant for n in INVARIANT} == {
        "embedding_separation": ("separation", "separation_factors"), "planted_recovery": ("recovery", "ari"),
        "category_purity": ("gain",)}


@PROPERTY
@given(method=st.sampled_from(METHODS.names()), metric_name=st.sampled_from(INVARIANT),
       factor=st.floats(min_value=0.05, max_value=20.0))
def test_declared_scale_invariant_columns_ignore_a_positive_factor(method, metric_name, factor):
    split = fitted(method)
    metric = small(metric_name)
    first, second = _score(metric, split), _score(metric, scaled(split, factor))
    assert (first is None) == (second is None)
    if first is not None:
        for key in metric.scale_invariant:
            if key in first:
                assert math.isclose(first[key], second[key], rel_tol=1e-5, abs_tol=1e-5), (method, key, factor)


@PROPERTY
@given(metric_name=st.sampled_from(SPLIT_METRICS), k=st.integers(1, 3), level=st.sampled_from([0.0, 1.0, 3.5]),
       family=st.sampled_from(["gating", "dictionary"]))
def test_degenerate_splits_get_values_in_bounds_or_not_applicable(metric_name, k, level, family):
    base = fitted("identity")
    target = base.target

    def constant(x):
        h, w = base.virtual_fn(x).shape[-2:]
        return torch.full((x.shape[0], k, h, w), level)

    split = Split(target=target, method="constant", k=k, recomposition=family, virtual_fn=constant,
                  residual_fn=(lambda x: base.virtual_fn(x)[:, 0] - k * level) if family == "dictionary" else None,
                  concepts=(target.concepts * k)[:k] if target.concepts else None)
    metric = small(metric_name)
    out = _score(metric, split)
    if out is not None:
        check_columns(metric, out)  # finite and inside the declared bounds


@PROPERTY
@given(k=st.integers(2, 4))
def test_copies_of_the_channel_score_no_separation_on_the_truth_and_crop_columns(k):
    """The stated values of a no-op split: k copies of the channel (duplicate) recover nothing
    beyond the channel (recovery 0), assign every pool image to one neuron (ARI 0) and
    separate nothing (separation 0), for any k."""
    split = build_plugin(METHODS.get("duplicate"), k=k, n_ref=16).fit(*planted_context())
    recovery = _score(small("planted_recovery"), split)
    separation = _score(small("embedding_separation"), split)
    assert abs(recovery["recovery"]) < 1e-6 and recovery.get("ari", 0.0) == 0.0
    assert separation["separation"] == 0.0


def test_a_single_held_out_image_gets_values_or_not_applicable_never_nan():
    from benchmark.sources.datasets import Subset

    ctx, target = planted_context()
    one = dataclasses.replace(ctx, heldout=Subset(ctx.heldout, [0]), memo=type(ctx.memo)())
    split = fitted("oracle")
    for name in SPLIT_METRICS:
        metric = small(name)
        with mock.patch.object(es, "_build_embedder", lambda n, a: flat_embedder()):
            try:
                out = metric.score(split, one)
            except NotApplicable:
                continue
        check_columns(metric, out)
