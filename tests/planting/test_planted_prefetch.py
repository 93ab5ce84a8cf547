"""The planted track's trainings in worker processes (benchmark.tracks.planted._prefetch_trainings):
the workers store the fine-tunings and validity checks and nothing else, and the planned track
is the same with one process and with two."""
from __future__ import annotations

import json

from benchmark.engine.environment import Environment
from benchmark.storage.cache import Cache
from benchmark.tracks.planted import TrainingsOnly, _plant_all
from tests.fakes import tiny_config

SEEDS = {"tracks.planted.model_seeds": [0, 1, 2], "tracks.planted.num_channels": 2}


def _kinds(root) -> dict[str, int]:
    if not root.exists():
        return {}
    return {d.name: len(list(d.glob("*.safetensors"))) for d in sorted(root.iterdir()) if d.is_dir()}


def _plans(tmp_path, name, workers):
    cache = Cache(tmp_path / name)
    env = Environment(tiny_config(tmp_path, **SEEDS), cache, progress=False)
    env.workers = workers
    return env, cache, _plant_all(env, env.config)


def _summary(plans) -> str:
    return json.dumps({kind: {"targets": [str(t) for t in plan.targets], "info": plan.info}
                       for kind, plan in plans.items()}, sort_keys=True, default=str)


def test_workers_store_only_the_finetunings_and_the_plan_is_the_same(tmp_path, monkeypatch):
    import benchmark.tracks.planted as planted

    stored: dict[str, dict[str, int]] = {}
    original = planted._prefetch_trainings

    def spy(env, config, shared, plantings):
        misses = env.cache.misses
        original(env, config, shared, plantings)
        stored["after_prefetch"] = _kinds(env.cache.root)  # before the parent plants anything itself
        stored["worker_misses"] = env.cache.misses - misses  # reported back by the workers

    monkeypatch.setattr(planted, "_prefetch_trainings", spy)
    _, one_cache, one = _plans(tmp_path, "one", 1)
    assert _kinds(one_cache.root).get("functional_planting") == 3  # one fine-tuning per model seed
    assert stored["after_prefetch"].get("functional_planting", 0) == 0  # one process: no prefetch
    env, two_cache, two = _plans(tmp_path, "two", 2)
    prefetched = stored["after_prefetch"]
    assert prefetched.get("functional_planting") == 3  # the workers trained every model seed's planting
    assert {k for k, n in prefetched.items() if n} == {"functional_planting", "planting_checks"}  # nothing else
    assert stored["worker_misses"] >= 3  # the workers' cache counters reach the parent (3 fine-tunings at least)
    assert _summary(one) == _summary(two)
    assert _kinds(one_cache.root) == _kinds(two_cache.root)
    assert isinstance(env.cache, Cache)  # the parent's environment keeps its own cache


def test_the_workers_cache_view_stores_trainings_and_drops_everything_else(tmp_path):
    import torch

    cache = Cache(tmp_path / "cache")
    cache.misses = 5
    view = TrainingsOnly(cache)
    assert (view.root, view.misses) == (cache.root, 5)
    tensors = {"x": torch.arange(3.0)}
    assert view.save("capture", {"a": 1}, tensors) is None  # dropped, also when saved directly
    assert view.get_or_compute("capture", {"a": 2}, lambda: tensors)["x"].tolist() == [0.0, 1.0, 2.0]
    view.save("functional_planting", {"a": 1}, tensors)
    view.save("planting_checks", {"a": 1}, tensors)
    assert _kinds(cache.root) == {"functional_planting": 1, "planting_checks": 1}
    assert view.misses == 6 and cache.load("functional_planting", {"a": 1})["x"].tolist() == [0.0, 1.0, 2.0]
