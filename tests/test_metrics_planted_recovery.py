"""planted_recovery on a channel planted in TinyNet: the parts themselves score 1, a random
gating does not, and every number matches a plain computation."""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from benchmark.layers import channel_activation
from benchmark.planting import plant
from benchmark.types import NotApplicable, Split, Target
from metrics.planted_recovery import PlantedRecovery, pearson_matrix
from tests.fakes import tiny_context

A, B = 0, 3


@functools.lru_cache(maxsize=1)
def world():
    base = tiny_context()
    model, truth = plant(base.model, "conv2", [(A, B)], classes=[((0,), (1,))])
    return dataclasses.replace(base, model=model, planted=truth), truth[A]


def part_owner(images):
    """Plain rule: the part with the larger positive spatial sum."""
    _, truth = world()
    with torch.no_grad():
        return truth.parts_fn(images).clamp(min=0).sum(dim=(2, 3)).argmax(1)


def oracle_split(order=(0, 1), n_ref=20):
    ctx, truth = world()
    ids = torch.arange(n_ref)
    owner = part_owner(ctx.fit.images(ids))
    refs = tuple(tuple(ids[owner == q].tolist()) for q in order)
    return Split(Target("tiny", "conv2", A), "oracle-like", 2, "gating",
                 lambda x: truth.parts_fn(x)[:, list(order)], reference_ids=refs)


def test_parts_themselves_score_one_in_any_order():
    ctx, _ = world()
    for order in ((0, 1), (1, 0)):
        out = PlantedRecovery().score(oracle_split(order), ctx)
        assert out["correlation"] == pytest.approx(1.0, abs=1e-9)
        assert out["explained_variance"] == pytest.approx(1.0, abs=1e-9)
        assert out["correlation_maps"] == pytest.approx(1.0, abs=1e-6)
        assert out["ari"] == pytest.approx(1.0)
        assert out["matched_p0"] == float(order.index(0))
        assert out["images"] == len(ctx.heldout) and out["references"] == 20


def random_gating_split(seed=0):
    ctx, _ = world()
    g = torch.Generator().manual_seed(seed)
    table = {}
    for data in (ctx.fit, ctx.heldout):
        for i in range(len(data)):
            table[float(data[i][0][0, 0, 0])] = float(torch.rand(1, generator=g))

    def virtual(images):
        w = torch.tensor([table[float(x[0, 0, 0])] for x in images])[:, None, None, None]
        orig = channel_activation(ctx.model, "conv2", A, images)[:, None]
        return torch.cat([w, 1 - w], 1) * orig

    ids = torch.randperm(len(ctx.fit), generator=g)[:20]
    return Split(Target("tiny", "conv2", A), "random", 2, "gating", virtual,
                 reference_ids=(tuple(ids[:10].tolist()), tuple(ids[10:].tolist())))


def test_random_gating_does_not_recover_the_parts():
    ctx, _ = world()
    oracle = PlantedRecovery().score(oracle_split(), ctx)
    for seed in range(3):
        out = PlantedRecovery().score(random_gating_split(seed), ctx)
        assert out["correlation"] < 0.9 < oracle["correlation"]
        assert out["explained_variance"] < 0.5
        assert out["ari"] < 0.5


def test_numbers_match_plain_formulas():
    ctx, truth = world()
    # k = 1: the planted channel itself (what "no split" gives); one part matched
    single = Split(Target("tiny", "conv2", A), "identity", 1, "gating",
                   lambda x: truth.parts_fn(x).sum(1, keepdim=True), reference_ids=(tuple(range(10)),))
    out = PlantedRecovery().score(single, ctx)
    with torch.no_grad():
        p = truth.parts_fn(ctx.heldout.images(range(len(ctx.heldout)))).sum(dim=(2, 3)).double().numpy()
    v = p.sum(1)
    corr = [np.corrcoef(v, p[:, q])[0, 1] for q in range(2)]
    q = int(np.argmax(corr))
    assert out[f"matched_p{q}"] == 0.0 and out[f"matched_p{1 - q}"] == -1.0
    assert out["correlation"] == pytest.approx(corr[q] / 2)
    ev = 1 - ((p[:, q] - v) ** 2).sum() / ((p[:, q] - p[:, q].mean()) ** 2).sum()
    assert out["explained_variance"] == pytest.approx(ev / 2)
    owner = part_owner(ctx.fit.images(range(10))).tolist()
    assert out["ari"] == pytest.approx(adjusted_rand_score(owner, [0] * 10))
    # doubled parts: correlation 1, explained variance 1 - sum p^2 / SST per part
    doubled = dataclasses.replace(oracle_split(), virtual_fn=lambda x: 2 * truth.parts_fn(x))
    out = PlantedRecovery().score(doubled, ctx)
    ev = [1 - (p[:, q] ** 2).sum() / ((p[:, q] - p[:, q].mean()) ** 2).sum() for q in range(2)]
    assert out["correlation"] == pytest.approx(1.0) and out["explained_variance"] == pytest.approx(np.mean(ev))


def test_pearson_matrix_against_numpy_and_constant_columns():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(30, 3)), rng.normal(size=(30, 2))
    want = np.corrcoef(a.T, b.T)[:3, 3:]
    np.testing.assert_allclose(pearson_matrix(a, b), want, atol=1e-12)
    a[:, 1] = 5.0
    assert (pearson_matrix(a, b)[1] == 0).all()


def test_not_applicable_cases():
    ctx, _ = world()
    other = dataclasses.replace(oracle_split(), target=Target("tiny", "conv2", 1))
    with pytest.raises(NotApplicable, match="not a planted channel"):
        PlantedRecovery().score(other, ctx)
    with pytest.raises(NotApplicable, match="no reference samples"):
        PlantedRecovery().score(dataclasses.replace(oracle_split(), reference_ids=()), ctx)
