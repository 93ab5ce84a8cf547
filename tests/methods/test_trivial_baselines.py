"""Known-answer tests of the trivial splits: duplicate, class_gate and nuisance_split."""
from __future__ import annotations

import copy
import dataclasses
import functools

import pytest
import torch

from benchmark.core.types import Context, NotApplicable, Target
from benchmark.engine.capture import CaptureSpec, capture
from benchmark.engine.layers import channel_activation
from benchmark.sources.datasets import Subset
from methods.class_gate import ClassGate, concept_scores
from methods.duplicate import Duplicate
from methods.nuisance_split import NuisanceSplit, colour_bins
from tests.fakes import TinyNet, tiny_context

LAYER = "conv2"


def images(n: int = 12, seed: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_duplicate_is_k_exact_copies_of_orig_over_k():
    ctx = tiny_context(top_k=10)
    target = Target("tiny", LAYER, 2)
    x = images()
    orig = channel_activation(ctx.model, LAYER, 2, x)
    for k in (2, 3):
        split = Duplicate(k=k, n_ref=8).fit(ctx, target)
        acts = split.activations(x)
        assert split.k == k and split.recomposition == "gating"
        for i in range(k):
            torch.testing.assert_close(acts[:, i], orig / k, atol=1e-7, rtol=0)
        torch.testing.assert_close(split.recompose(acts), orig, atol=1e-6, rtol=0)
        top = tuple(ctx.stats.top_max_ids[2, :8].tolist())
        assert split.reference_ids == (top,) * k  # every copy has the same references


def test_duplicate_bad_input():
    with pytest.raises(ValueError, match="k >= 2"):
        Duplicate(k=1)
    with pytest.raises(ValueError, match="n_ref must be >= 1"):
        Duplicate(n_ref=0)


def test_concept_scores_take_the_largest_logit_of_each_class_set():
    logits = torch.tensor([[1.0, 5.0, 2.0, 0.0], [3.0, -1.0, 0.5, 4.0]])
    assert concept_scores(logits, ((0, 1), (2,), (3,))).tolist() == [[5.0, 2.0, 0.0], [3.0, 0.5, 4.0]]
    with pytest.raises(ValueError, match="class 7 is out of range: the model has 4 logits"):
        concept_scores(logits, ((7,), (0,)))


def test_class_gate_gates_by_the_concept_logits():
    ctx = tiny_context(top_k=12)
    model = copy.deepcopy(ctx.model)
    with torch.no_grad():
        model.fc.bias.zero_()  # so that the random net's logits order changes from image to image
    ctx = dataclasses.replace(ctx, model=model)
    concepts = ((0, 3), (1,))
    target = Target("tiny", LAYER, 1, concepts=concepts)
    split = ClassGate(n_ref=10).fit(ctx, target)
    x = images(40)
    with torch.no_grad():
        logits = ctx.model(x)
    # written plainly: concept 0 wins where max(z_0, z_3) >= z_1
    want = (logits[:, 1] > torch.maximum(logits[:, 0], logits[:, 3])).long()
    assert 0 < want.sum() < 40, "the test images must exercise both gates"
    acts, orig = split.activations(x), channel_activation(ctx.model, LAYER, 1, x)
    for n in range(40):
        assert torch.equal(acts[n, want[n]], orig[n]) and acts[n, 1 - want[n]].abs().max() == 0
    assert split.concepts == concepts
    top = ctx.stats.top_max_ids[1, :10]
    with torch.no_grad():
        ref_logits = ctx.model(ctx.fit.images(top))
    owner = (ref_logits[:, 1] > torch.maximum(ref_logits[:, 0], ref_logits[:, 3])).long()
    assert split.reference_ids == (tuple(top[owner == 0].tolist()), tuple(top[owner == 1].tolist()))


def test_class_gate_needs_concepts():
    ctx = tiny_context()
    with pytest.raises(NotApplicable, match="names 0 concept\\(s\\), it needs at least 2"):
        ClassGate(n_ref=5).fit(ctx, Target("tiny", LAYER, 1))


@functools.lru_cache(maxsize=1)
def world_context() -> tuple[Context, object]:
    from benchmark.sources.world import SyntheticWorld

    world = SyntheticWorld("test", size=480, seed=3)  # images no default was tuned on
    fit = Subset(world, range(0, 480, 2))  # the method must see through subsets
    model = TinyNet(num_classes=16, seed=1).eval()
    stats = capture(model, fit, CaptureSpec(LAYER, top_k=40, tau=None), progress=False)
    ctx = Context(model=model, model_name="tiny", layer=LAYER, fit=fit, heldout=fit, stats=stats, batch_size=64)
    return ctx, world


def test_colour_bins_read_the_generating_colour_factor_from_pixels():
    _, world = world_context()
    est = colour_bins(world.to_unit_range(world.images(range(len(world)))), 8)
    assert (est == world.factors["colour"]).float().mean() >= 0.99


def test_nuisance_split_splits_a_class_by_its_colour_parity():
    ctx, world = world_context()
    target = Target("tiny", LAYER, 4)
    split = NuisanceSplit(n_ref=30).fit(ctx, target)
    idx = world.indices_of([5])  # one class: both halves hold images of the same class
    x = world.images(idx)
    parity = world.factors["colour"][idx] % 2
    assert 0 < parity.sum() < idx.numel()
    acts, orig = split.activations(x), channel_activation(ctx.model, LAYER, 4, x)
    active = (acts.abs().sum(dim=(2, 3)) > 0).float()
    alive = orig.abs().sum(dim=(1, 2)) > 0
    agree = (active[alive].argmax(1) == parity[alive]).float().mean()
    assert agree >= 0.99
    torch.testing.assert_close(split.recompose(acts), orig, atol=1e-6, rtol=0)
    # references go to the gate of their colour parity, and cover the top 30
    flat = sorted(split.reference_ids[0] + split.reference_ids[1])
    assert flat == sorted(ctx.stats.top_max_ids[4, :30].tolist())
    fit_parity = world.factors["colour"][ctx.fit.indices] % 2
    hits = [int(fit_parity[r]) == i for i, group in enumerate(split.reference_ids) for r in group]
    assert sum(hits) >= 0.95 * len(hits)


def test_nuisance_split_does_not_apply_outside_the_synthetic_world():
    ctx = tiny_context()
    with pytest.raises(NotApplicable, match="TensorImages, where no class-irrelevant factor is known"):
        NuisanceSplit(n_ref=5).fit(ctx, Target("tiny", LAYER, 0))
    with pytest.raises(ValueError, match="RGB images"):
        colour_bins(torch.zeros(2, 1, 4, 4), 8)
    assert dataclasses.is_dataclass(NuisanceSplit)
