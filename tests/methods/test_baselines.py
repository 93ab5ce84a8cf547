"""Known-answer tests of the baselines: identity, random_split and the planted oracle."""
from __future__ import annotations

import functools
import hashlib

import pytest
import torch

from benchmark.core.types import Context, NotApplicable, Target
from benchmark.engine.capture import CaptureSpec, capture
from benchmark.engine.layers import channel_activation
from benchmark.planting.merge import plant
from methods.identity import Identity
from methods.oracle import Oracle
from methods.random_split import RandomSplit, hash_gates
from tests.fakes import TinyNet, random_images

LAYER = "conv2"


@functools.lru_cache(maxsize=1)
def planted_context() -> Context:
    model, truth = plant(TinyNet(seed=0).eval(), LAYER, [(0, 3)], classes=[((0,), (1,))])
    fit = random_images(n=40, seed=0)
    stats = capture(model, fit, CaptureSpec(LAYER, top_k=20, tau=None), progress=False)
    return Context(model=model, model_name="tiny", layer=LAYER, fit=fit, heldout=random_images(n=12, seed=5),
                   stats=stats, batch_size=16, planted=truth)


def images(n: int = 6, seed: int = 9) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_identity_is_the_channel_itself():
    ctx = planted_context()
    split = Identity(n_ref=12).fit(ctx, Target("tiny", LAYER, 1))
    x = images()
    assert split.k == 1
    assert torch.equal(split.activations(x)[:, 0], channel_activation(ctx.model, LAYER, 1, x))
    assert split.reference_ids == (tuple(ctx.stats.top_max_ids[1, :12].tolist()),)


def test_hash_gate_known_answer_and_determinism():
    x = images(5)
    salt = (3).to_bytes(8, "little", signed=True)
    plain = [int.from_bytes(hashlib.sha256(salt + img.numpy().tobytes()).digest()[:8], "little") % 2 for img in x]
    assert hash_gates(x, 2, seed=3).tolist() == plain
    # the same image gets the same gate in any batch order and in double precision
    perm = torch.tensor([4, 2, 0, 1, 3])
    assert torch.equal(hash_gates(x[perm], 2, seed=3), hash_gates(x, 2, seed=3)[perm])
    assert torch.equal(hash_gates(x.double(), 2, seed=3), hash_gates(x, 2, seed=3))


def test_random_split_gates_are_balanced_and_depend_on_the_seed():
    x = images(1000, seed=1)
    g0, g1 = hash_gates(x, 2, seed=0), hash_gates(x, 2, seed=1)
    assert 0.45 < g0.float().mean() < 0.55  # binomial sd 0.016: 3 sd either side
    assert 0.3 < (g0 != g1).float().mean() < 0.7  # a new seed re-draws the gates
    counts = torch.bincount(hash_gates(x, 4, seed=0), minlength=4)
    assert counts.min() > 200 and counts.max() < 300


def test_random_split_fit_gates_whole_maps_and_deals_references():
    ctx = planted_context()
    target = Target("tiny", LAYER, 1)
    split = RandomSplit(n_ref=15, seed=2).fit(ctx, target)
    x = images(8)
    acts, orig = split.activations(x), channel_activation(ctx.model, LAYER, 1, x)
    gates = hash_gates(x, 2, seed=2)
    for n in range(8):
        assert torch.equal(acts[n, gates[n]], orig[n]) and acts[n, 1 - gates[n]].abs().max() == 0
    top = ctx.stats.top_max_ids[1, :15].tolist()
    groups = split.reference_ids
    assert sorted(groups[0] + groups[1]) == sorted(top) and {len(g) for g in groups} == {7, 8}
    assert RandomSplit(n_ref=15, seed=2).fit(ctx, target).reference_ids == groups
    assert RandomSplit(n_ref=15, seed=3).fit(ctx, target).reference_ids != groups


def test_oracle_virtual_neurons_are_the_planted_parts():
    ctx = planted_context()
    target = Target("tiny", LAYER, 0)
    split = Oracle(n_ref=12).fit(ctx, target)
    x = images(7)
    parts = ctx.planted[0].parts_fn(x)
    assert torch.equal(split.activations(x), parts)
    torch.testing.assert_close(split.activations(x).sum(1), channel_activation(ctx.model, LAYER, 0, x),
                               atol=1e-5, rtol=0)
    # and the parts are the caller's original channels 0 and 3
    original = TinyNet(seed=0).eval()
    torch.testing.assert_close(parts[:, 1], channel_activation(original, LAYER, 3, x), atol=1e-5, rtol=0)
    assert split.concepts == ((0,), (1,))
    # each reference goes to the part with the larger positive spatial sum on it
    top = ctx.stats.top_max_ids[0, :12]
    owner = ctx.planted[0].parts_fn(ctx.fit.images(top)).clamp(min=0).sum(dim=(2, 3)).argmax(1)
    assert split.reference_ids == (tuple(top[owner == 0].tolist()), tuple(top[owner == 1].tolist()))


def test_oracle_needs_planted_ground_truth():
    ctx = planted_context()
    with pytest.raises(NotApplicable, match="channel 2 of 'conv2' is not planted.*planted channels here: \\[0\\]"):
        Oracle(n_ref=12).fit(ctx, Target("tiny", LAYER, 2))


def test_baseline_bad_input():
    ctx = planted_context()
    with pytest.raises(ValueError, match="k >= 2"):
        RandomSplit(k=1)
    with pytest.raises(ValueError, match="n_ref=1 must be >= k=2"):
        RandomSplit(n_ref=1)
    with pytest.raises(ValueError, match="top_k >= 21"):
        Identity(n_ref=21).fit(ctx, Target("tiny", LAYER, 0))
    with pytest.raises(ValueError, match="exceeds the 40 images"):
        Oracle(n_ref=41).fit(ctx, Target("tiny", LAYER, 0))
