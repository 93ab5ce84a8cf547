"""The same numbers on every machine and thread count: the tiny config run with 1 and with 2
torch threads gives results equal, within the stated tolerance, to the committed expected
results (tests/data/tiny_results.csv), and to each other.

The tolerance (RTOL, ATOL) is what float summation order may change between thread counts
and CPUs; every tie an argmax, a sort or an assignment meets is broken by index after
rounding (e.g. metrics/planted_recovery.TIE_DECIMALS), so statuses and row sets must match
exactly. After a change that moves a number on purpose, rewrite the file with
``python -m tests.run.test_thread_determinism`` and commit it with the change.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

EXPECTED = Path(__file__).resolve().parents[1] / "data" / "tiny_results.csv"
RTOL, ATOL = 1e-5, 1e-5  # float32 noise: e.g. |own - 1| is 2e-7 instead of 0 with another thread layout


def _run(folder: Path, threads: int) -> Path:
    from benchmark.run.runner import Runner
    from benchmark.storage.cache import Cache
    from tests.fakes import tiny_config

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return Runner(tiny_config(folder), output_dir=folder / "run", cache=Cache(folder / "cache"),
                      progress=False).run()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [1, 2])
def test_tiny_results_equal_the_committed_ones(tmp_path, threads):
    from benchmark.reporting.compare import compare_results

    out = _run(tmp_path, threads)
    comparison = compare_results(EXPECTED, out / "results.csv", rtol=RTOL, atol=ATOL)
    assert comparison.matched > 500
    assert comparison.identical, comparison.summary()


if __name__ == "__main__":  # rewrite the expected results (see the module docstring)
    import shutil
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    run = _run(Path(tempfile.mkdtemp()), 1)
    shutil.copyfile(run / "results.csv", EXPECTED)
    print(f"wrote {EXPECTED}")
