"""planted_recovery on a channel planted in TinyNet: the parts themselves score 1, copies of
the channel score exactly 0, random gating about 0, and the numbers match plain formulas."""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from benchmark.core.types import NotApplicable, Split, Target
from benchmark.engine.layers import channel_activation
from benchmark.engine.pool import reference_pool
from benchmark.planting.merge import plant
from metrics.planted_recovery import PlantedRecovery, crossfit_r2, pearson_matrix
from tests.fakes import tiny_context

A, B = 0, 3


@functools.lru_cache(maxsize=1)
def world():
    base = tiny_context()
    model, truth = plant(base.model, "conv2", [(A, B)], classes=[((0,), (1,))])
    return dataclasses.replace(base, model=model, planted=truth), truth[A]


def split_of(fn, k, name="s"):
    return Split(Target("tiny", "conv2", A), name, k, "gating", fn, reference_ids=((0,),) * k)


def orig(x):
    ctx, _ = world()
    return channel_activation(ctx.model, "conv2", A, x)


def test_parts_themselves_score_one_in_any_order():
    ctx, truth = world()
    for order in ((0, 1), (1, 0)):
        out = PlantedRecovery().score(split_of(lambda x: truth.parts_fn(x)[:, list(order)], 2), ctx)
        assert out["recovery"] == pytest.approx(1.0, abs=1e-9)
        assert out["ari"] == pytest.approx(1.0)
        assert out["correlation"] == pytest.approx(1.0, abs=1e-9)
        assert out["matched_p0"] == float(order.index(0))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_copies_of_the_channel_score_exactly_no_separation(k):
    ctx, _ = world()
    out = PlantedRecovery().score(split_of(lambda x: orig(x)[:, None].repeat(1, k, 1, 1) / k, k), ctx)
    assert out["recovery"] == pytest.approx(0.0, abs=1e-6)  # 1/3 is inexact in float32
    assert out["ari"] == pytest.approx(0.0, abs=1e-12)
    assert out["pool_groups"] == 1.0


def random_gating_split(seed=0):
    g = torch.Generator().manual_seed(seed)
    ctx, _ = world()
    table = {}
    for data in (ctx.fit, ctx.heldout):
        for i in range(len(data)):
            table[float(data[i][0][0, 0, 0])] = float(torch.rand(1, generator=g) > 0.5)

    def virtual(images):
        w = torch.tensor([table[float(x[0, 0, 0])] for x in images])[:, None, None, None]
        return torch.cat([w, 1 - w], 1) * orig(images)[:, None]

    return split_of(virtual, 2, "random")


def test_random_gating_is_no_better_than_no_split_on_average():
    ctx, _ = world()
    scores = [PlantedRecovery().score(random_gating_split(s), ctx) for s in range(4)]
    assert np.mean([s["recovery"] for s in scores]) < 0.1
    assert all(s["recovery"] < 0.5 and s["ari"] < 0.5 for s in scores)


def test_numbers_match_plain_formulas():
    ctx, truth = world()
    out = PlantedRecovery(seed=3).score(split_of(lambda x: orig(x)[:, None], 1), ctx)
    x = ctx.heldout.images(range(len(ctx.heldout)))
    with torch.no_grad():
        p = truth.parts_fn(x).sum(dim=(2, 3)).double().numpy()
        o = orig(x).sum(dim=(1, 2)).double().numpy()
    n = len(o)
    folds = np.zeros(n, dtype=int)
    folds[np.random.default_rng(3).permutation(n)[: n // 2]] = 1
    for q in range(2):  # two-fold affine fit by polyfit
        pred = np.empty(n)
        for f in (0, 1):
            slope, icpt = np.polyfit(o[folds != f], p[folds != f, q], 1)
            pred[folds == f] = slope * o[folds == f] + icpt
        want = 1 - ((p[:, q] - pred) ** 2).sum() / ((p[:, q] - p[:, q].mean()) ** 2).sum()
        assert out[f"r2_channel_p{q}"] == pytest.approx(want, abs=1e-9)
        assert out[f"r2_split_p{q}"] == pytest.approx(want, abs=1e-9)
    # ARI on the shared pool: labels of the truth vs one group
    ids = reference_pool(ctx, "conv2", A, 100)
    with torch.no_grad():
        owner = truth.parts_fn(ctx.heldout.images(ids)).clamp(min=0).sum((2, 3)).argmax(1).tolist()
    if len(set(owner)) > 1:
        assert out["ari"] == pytest.approx(adjusted_rand_score(owner, [0] * len(owner)))
    assert out["pool"] == float(min(100, len(ctx.heldout)))


def test_crossfit_r2_known_answers():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 1))
    folds = np.arange(200) % 2
    assert crossfit_r2(x, 3 * x[:, 0] + 1, folds) == pytest.approx(1.0)
    assert crossfit_r2(np.hstack([x, x]), 3 * x[:, 0] + 1, folds) == pytest.approx(1.0)
    noise = rng.normal(size=200)
    assert crossfit_r2(x, noise, folds) < 0.02  # out of sample: no gain from a useless regressor
    with pytest.raises(ValueError):
        crossfit_r2(x, np.ones(200), folds)


def test_pearson_matrix_against_numpy_and_constant_columns():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(30, 3)), rng.normal(size=(30, 2))
    want = np.corrcoef(a.T, b.T)[:3, 3:]
    np.testing.assert_allclose(pearson_matrix(a, b), want, atol=1e-12)
    a[:, 1] = 5.0
    assert (pearson_matrix(a, b)[1] == 0).all()


def test_not_applicable_cases():
    ctx, truth = world()
    other = Split(Target("tiny", "conv2", 1), "o", 2, "gating", truth.parts_fn, reference_ids=((0,), (1,)))
    with pytest.raises(NotApplicable, match="not a planted channel"):
        PlantedRecovery().score(other, ctx)


def test_matching_breaks_ties_by_index_not_by_round_off():
    from metrics.planted_recovery import match_parts

    # two identical virtual neurons whose correlations differ by round-off only: either
    # order of the noise gives the same matching
    base = np.array([[0.7, 0.3], [0.7, 0.3]])
    for noise in (1e-13, -1e-13):
        corr = base + np.array([[0.0, 0.0], [noise, -noise]])
        assert match_parts(corr) == match_parts(base)
    assert match_parts(np.array([[0.1, 0.9], [0.8, 0.2]])) == {0: 1, 1: 0}  # a real preference wins
