"""The planted track's validity checks kept in the cache (benchmark.planting.checks): the
cached values equal the direct computation, a second call computes nothing, and a changed
network or image set is a new entry."""
from __future__ import annotations

import torch

from benchmark.engine.capture import CaptureSpec, capture
from benchmark.planting.checks import KIND, cached_accuracy, cached_part_shares
from benchmark.planting.merge import accuracy, plant
from benchmark.planting.validity import part_shares
from benchmark.sources.datasets import Subset
from benchmark.storage.cache import Cache
from tests.fakes import TinyNet, random_images


def _entries(cache: Cache) -> int:
    folder = cache.root / KIND
    return len(list(folder.glob("*.safetensors"))) if folder.exists() else 0


def test_cached_accuracy_is_the_accuracy_and_is_computed_once_per_network_and_images(tmp_path, monkeypatch):
    import benchmark.planting.checks as checks

    data = random_images(n=40, num_classes=4, seed=3)
    model, other = TinyNet(num_classes=4, seed=0).eval(), TinyNet(num_classes=4, seed=1).eval()
    cache = Cache(tmp_path)
    expected = accuracy(model, data, 16)
    assert cached_accuracy(model, data, 16, "cpu", cache) == expected == cached_accuracy(model, data, 16, "cpu", None)
    calls = []
    monkeypatch.setattr(checks, "accuracy", lambda *a: calls.append(a) or -1.0)
    assert cached_accuracy(model, data, 16, "cpu", cache) == expected and not calls  # read, not computed
    assert cached_accuracy(other, data, 16, "cpu", cache) == -1.0 and len(calls) == 1  # another network
    assert cached_accuracy(model, Subset(data, range(20)), 16, "cpu", cache) == -1.0 and len(calls) == 2
    assert _entries(cache) == 3 and (cache.hits, cache.misses) == (1, 3)


def test_cached_part_shares_equal_the_direct_shares_and_follow_the_planted_pair(tmp_path):
    fit = random_images(n=48, num_classes=4, seed=5)
    base = TinyNet(num_classes=4, seed=0).eval()
    cache = Cache(tmp_path)
    values = {}
    for pair in ((0, 1), (2, 3)):
        planted, truths = plant(base, "conv2", [pair], classes=[((0,), (1,))])
        stats = capture(planted, fit, CaptureSpec("conv2", top_k=12), progress=False)
        truth = truths[pair[0]]
        direct = part_shares(truth, stats, fit, 12, 16)
        assert cached_part_shares(truth, planted, stats, fit, 12, 16, "cpu", cache) == direct
        assert cached_part_shares(truth, planted, stats, fit, 12, 16, "cpu", cache) == direct  # from the cache
        assert abs(sum(direct.values()) - 1.0) < 1e-9
        values[pair] = direct
    assert _entries(cache) == 2 and cache.hits == 2
    assert torch.isfinite(torch.tensor([v for d in values.values() for v in d.values()])).all()
