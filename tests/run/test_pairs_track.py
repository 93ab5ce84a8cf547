"""The pairs track's detected targets: ``max_pairs`` caps them per (model, layer), 0 keeps all."""
from __future__ import annotations

from benchmark.engine.environment import Environment
from benchmark.storage.cache import Cache
from benchmark.tracks.pairs import pairs_track
from tests.fakes import tiny_config

DETECTED = {"tracks.pairs.source": "detected", "tracks.pairs.p": 0.1, "tracks.pairs.gamma": 1.0}


def _targets(tmp_path, max_pairs):
    config = tiny_config(tmp_path, **DETECTED, **{"tracks.pairs.max_pairs": max_pairs})
    env = Environment(config, Cache(tmp_path / "cache"), progress=False)
    return pairs_track(env, config).targets


def test_max_pairs_caps_the_detected_pairs_and_zero_keeps_all(tmp_path):
    every = _targets(tmp_path, 0)
    assert len(every) >= 3  # the tiny net has several channels relevant to two classes at p = 0.1
    assert _targets(tmp_path, 1000) == every
    assert _targets(tmp_path, 2) == every[:2]  # the most polysemantic first (lowest cosine)
