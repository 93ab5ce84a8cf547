"""Functional planting: the fine-tuned network uses the planted channel for both concepts,
and the planted channel stays exactly part_0 + part_1 (benchmark.planting.functional)."""
from __future__ import annotations

import functools

import pytest
import torch

from benchmark.engine.capture import CaptureSpec, capture
from benchmark.engine.layers import channel_activation
from benchmark.planting.functional import FunctionalSchedule, downstream_modules, finetune_downstream
from benchmark.planting.merge import choose_planting_pairs, mean_responses, plant
from benchmark.planting.validity import concept_measures
from benchmark.sources.datasets import Subset
from tests.fakes import TinyNet, random_images

LAYER = "blocks.2.conv2"  # the default layer; the planted track accepts about half its candidates there


def test_downstream_modules_are_the_ones_after_the_layer():
    net = TinyNet()
    assert downstream_modules(net, "conv2") == ["act2", "pool", "fc"]


def test_finetune_keeps_the_parts_exact_and_the_upstream_frozen():
    base = TinyNet(seed=0).eval()
    fit = random_images(n=64, seed=1)
    merged, truths = plant(base, "conv2", [(0, 3)], classes=[((0,), (1,))], offsets=torch.linspace(-1, 1, 6))
    before = {k: v.clone() for k, v in merged.state_dict().items()}
    tuned = finetune_downstream(merged, "conv2", [0], fit, FunctionalSchedule(steps=20, batch_size=16, lr=0.05))
    after = tuned.state_dict()
    assert not torch.equal(before["fc.weight"], after["fc.weight"]), "the layers after the planted one must train"
    for k in ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"):
        assert torch.equal(before[k], after[k]), k
    x = random_images(n=8, seed=7).images(range(8))
    torch.testing.assert_close(channel_activation(tuned, "conv2", 0, x), truths[0].parts_fn(x).sum(1),
                               atol=1e-5, rtol=0)
    # the centred parts are the original channels minus their offsets
    torch.testing.assert_close(truths[0].parts_fn(x)[:, 1], channel_activation(base, "conv2", 3, x) - 0.2,
                               atol=1e-5, rtol=0)


def test_schedule_bad_input():
    with pytest.raises(ValueError, match="dropout must be in"):
        FunctionalSchedule(dropout=1.0)
    with pytest.raises(ValueError, match="lr must be > 0"):
        FunctionalSchedule(lr=0)


@functools.lru_cache(maxsize=1)
def world_planting():
    from benchmark.sources.world import SyntheticWorld, load_world_cnn
    from benchmark.tracks import wordnet_unrelated

    model = load_world_cnn(seed=0)
    fit = Subset(SyntheticWorld("train", seed=0), range(0, 20_000, 10))  # 2,000 images
    heldout = Subset(SyntheticWorld("val", seed=0), range(0, 4_000, 10))  # 400 images
    spec = CaptureSpec(LAYER, top_k=50, tau=0.03, batch_size=250)
    stats = capture(model, fit, spec, progress=False)
    unrelated = wordnet_unrelated(fit.classes, 0.5)
    chosen = choose_planting_pairs(stats, 8, unrelated)
    pairs = [p for p, _ in chosen]
    classes = [((ta,), (tb,)) for _, (ta, tb) in chosen]
    offsets = mean_responses(model, LAYER, stats, fit.images([0]))
    merged, truths = plant(model, LAYER, pairs, classes, offsets=offsets)
    schedule = FunctionalSchedule(steps=150, batch_size=128, seed=0)
    import copy

    tuned = finetune_downstream(copy.deepcopy(merged), LAYER, [a for a, _ in pairs], fit, schedule)
    return merged, tuned, truths, heldout, spec


def test_functional_step_makes_the_planted_channel_relevant_to_both_concepts(world_model):
    merged, tuned, truths, heldout, spec = world_planting()
    before = capture(merged, heldout, spec, progress=False)
    after = capture(tuned, heldout, spec, progress=False)
    passes_after, fails_before = [], []
    for a, truth in truths.items():
        m0 = concept_measures(before, a, truth.classes)
        m1 = concept_measures(after, a, truth.classes)
        both_before = min(m0["relevance_c0"], m0["relevance_c1"]) >= 0.5
        both_after = min(m1["relevance_c0"], m1["relevance_c1"]) >= 0.5
        passes_after.append(both_after)
        fails_before.append(not both_before)
        if both_after and not both_before:
            x = heldout.images(heldout.indices_of(list(truth.classes[0] + truth.classes[1]))[:16])
            torch.testing.assert_close(channel_activation(tuned, LAYER, a, x), truth.parts_fn(x).sum(1),
                                       atol=1e-5, rtol=0)
    # at least one planted channel goes from failing to passing the filter on both concepts
    # (its parts checked exact above)
    assert any(p and f for p, f in zip(passes_after, fails_before)), (passes_after, fails_before)
