"""Units in worker processes (benchmark.run.workers): the same results.csv for any worker
count, a failing unit keeps its exception and traceback, a killed worker fails the run."""
from __future__ import annotations

import os
import signal

import pandas as pd
import pytest

from benchmark.core.forked import WorkerTraceback, run_groups
from benchmark.run.runner import Runner
from benchmark.run.workers import resolve_workers
from benchmark.storage.cache import Cache
from tests.fakes import tiny_config


def _run(tmp_path, workers, name):
    folder = tmp_path / name
    folder.mkdir()
    return Runner(tiny_config(folder), output_dir=folder / "run", cache=Cache(folder / "cache"), progress=False,
                  workers=workers).run()


def test_two_workers_write_the_same_results_bit_for_bit_as_one(tmp_path):
    one = _run(tmp_path, 1, "one")  # fresh caches: the workers also compute the cached work side by side
    two = _run(tmp_path, 2, "two")
    assert (one / "results.csv").read_bytes() == (two / "results.csv").read_bytes()
    assert sorted(p.name for p in (one / "parts").iterdir()) == sorted(p.name for p in (two / "parts").iterdir())
    assert sorted(p.name for p in (one / "cards").iterdir()) == sorted(p.name for p in (two / "cards").iterdir())
    for name in ("leaderboard.md", "report.md", "meta_evaluation.md", "headline_eligibility.csv"):
        assert (one / name).read_bytes() == (two / name).read_bytes(), name  # statistics drawn in a worker
    assert sorted(p.name for p in (one / "figures").iterdir()) == sorted(p.name for p in (two / "figures").iterdir())
    assert (two / "report" / "index.html").is_file()
    timings = pd.read_json(two / "run.json", typ="series")["timings"]
    assert {"fit/arv_surgery", "metric/activation_ratio", "units/planted", "statistics"} <= set(timings)
    assert not list(two.rglob("*.tmp"))


class Injected(ValueError):
    """An exception type the test can recognise after it crossed the process boundary."""


def test_a_failing_unit_in_a_worker_reraises_its_exception_with_the_workers_traceback(tmp_path, monkeypatch):
    config = tiny_config(tmp_path)
    original = Runner._run_unit

    def failing(self, plan, method, target):
        if method.name == "random_split" and plan.track == "pairs":
            raise Injected(f"injected failure of {method.name}")
        return original(self, plan, method, target)

    monkeypatch.setattr(Runner, "_run_unit", failing)
    with pytest.raises(Injected, match="injected failure of random_split") as raised:
        Runner(config, output_dir=tmp_path / "run", progress=False, workers=2).run()
    cause = raised.value.__cause__
    assert isinstance(cause, WorkerTraceback)
    assert "in worker" in str(cause) and "in failing" in str(cause) and "raise Injected" in str(cause)
    assert not (tmp_path / "run" / "results.csv").exists()
    assert not list((tmp_path / "run").rglob("*.tmp"))
    finished = len(list((tmp_path / "run" / "parts").glob("*.csv")))
    monkeypatch.setattr(Runner, "_run_unit", original)
    resumed = Runner(config, output_dir=tmp_path / "run", progress=False, workers=2).run()  # resumes
    assert len(list((resumed / "parts").glob("*.csv"))) > finished
    assert (resumed / "results.csv").is_file()


def _die(unit):
    if unit == "die":
        os.kill(os.getpid(), signal.SIGKILL)


def test_a_killed_worker_fails_the_run_naming_the_signal():
    with pytest.raises(RuntimeError, match=r"worker [01] of 2 ended without a report \(killed by SIGKILL\)"):
        run_groups([["ok"], ["die"]], _die, 2, counters=dict, done=lambda: 0, total=2, progress=False)


def test_workers_report_what_their_units_added_to_the_counters():
    state = {"seconds": 1.0}

    def unit(value):
        state["seconds"] += value

    added = run_groups([[0.5], [0.25, 0.25], [2.0]], unit, 2, counters=lambda: dict(state),
                       done=lambda: 0, total=4, progress=False)
    assert added == {"seconds": pytest.approx(3.0)}  # each worker reports its own increase only
    assert state["seconds"] == 1.0  # the parent's state is untouched: the units ran in the workers


def test_worker_counts_are_checked():
    assert resolve_workers(3, "cpu") == 3
    assert resolve_workers("auto", "cpu") == len(os.sched_getaffinity(0))
    assert resolve_workers(4, "cuda:0") == 1  # CUDA cannot be forked
    for bad in (0, -1, "two", 1.5, True):
        with pytest.raises(ValueError, match="workers must be 'auto' or an integer >= 1"):
            resolve_workers(bad, "cpu")


def test_the_workers_option_accepts_auto_and_positive_counts_only():
    import argparse

    from benchmark.run.workers import parse_workers

    assert parse_workers("auto") == "auto" and parse_workers("3") == 3
    for bad in ("0", "-2", "two", "1.5", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="expected 'auto' or an integer >= 1"):
            parse_workers(bad)


def test_many_more_groups_than_a_pipe_buffer_holds_do_not_block():
    # 20,000 queued group indices are far more than the 64 KiB a pipe holds before a writer waits
    seen = {"n": 0.0}

    def unit(_item):
        seen["n"] += 1

    added = run_groups([[i] for i in range(20_000)], unit, 2, counters=lambda: dict(seen), done=lambda: 0,
                       total=20_000, progress=False)
    assert added == {"n": 20_000.0}
