"""The process-wide progress switch: a quiet run turns bars off for work started deep inside
metrics (the judge embedder's training) and restores the setting afterwards."""
from __future__ import annotations

import benchmark.sources.embedders.judge as judge_embedder
from benchmark.core.progress import enabled, progress_bars


def test_switch_is_scoped_and_restored():
    assert enabled()
    with progress_bars(False):
        assert not enabled()
        with progress_bars(True):
            assert enabled()
        assert not enabled()
    assert enabled()


def test_judge_embedder_loads_its_network_with_the_switch(monkeypatch):
    seen = {}

    def fake_load_judge(weights=None, seed=0, world_seed=0, progress=True):
        seen["progress"] = progress
        return object()

    monkeypatch.setattr("benchmark.sources.world.judge.load_judge", fake_load_judge)
    judge_embedder._judge_model.cache_clear()
    try:
        with progress_bars(False):
            judge_embedder._judge_model(None, 12345, 0)
        assert seen["progress"] is False
        judge_embedder._judge_model(None, 54321, 0)
        assert seen["progress"] is True
    finally:
        judge_embedder._judge_model.cache_clear()
