"""The crash harness (scripts/crash_harness.py) with N = 5 SIGKILLs: the tiny run killed at
random moments (first run and --overwrite), resumed each time, ends with results equal to an
uninterrupted run's, a cache that verifies clean and no temporary file left."""
from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "crash_harness.py"


def _harness():
    spec = importlib.util.spec_from_file_location("crash_harness", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_five_kills_are_survived(tmp_path):
    record = _harness().harness(kills=5, seed=0, work=tmp_path)
    assert record["killed"] == 5
    assert record["problems"] == [] and record["ok"]
    assert record["intact_after_overwrite_kill"] == record["overwrite_kills"]


def test_leftovers_are_found(tmp_path):
    harness = _harness()
    (tmp_path / "run" / ".staging").mkdir(parents=True)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / ".entry.safetensors.x1.tmp").write_text("")
    assert harness.leftovers(tmp_path / "run", tmp_path / "cache") == [
        str(tmp_path / "cache" / ".entry.safetensors.x1.tmp"), str(tmp_path / "run" / ".staging")]


def test_two_runs_sharing_one_cache_both_finish_with_the_same_numbers(tmp_path):
    record = _harness().concurrent(tmp_path, runs=2)
    assert record["exit_codes"] == [0, 0], record["errors"]
    assert record["equal"] == [True, True]
    assert record["cache_problems"] == [] and record["cache_entries"] > 0 and record["leftovers"] == []
