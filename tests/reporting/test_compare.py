"""`polysemy compare`: two runs' results value by value (benchmark/reporting/compare.py)."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from benchmark.reporting.compare import compare_results
from tests.reporting.test_tables import _rows


def _write(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / "results.csv", index=False)
    return folder


def test_identical_runs_and_each_kind_of_difference(tmp_path):
    base = _rows("a", "m", "v", [0.5, 0.25, math.nan], "true") + _rows("b", "m", "v", [0.1, 0.2, 0.3], "true")
    a = _write(tmp_path / "a", base)
    assert compare_results(a, _write(tmp_path / "same", base)).identical  # NaN equals NaN
    changed = [dict(r) for r in base]
    changed[0]["value"] = 0.5 + 1e-6  # beyond rtol 1e-9
    changed[4]["status"], changed[4]["value"] = "error", math.nan
    del changed[5]
    found = compare_results(a, _write(tmp_path / "changed", changed))
    assert not found.identical and found.matched == 5
    assert list(found.values["value_b"]) == [pytest.approx(0.5 + 1e-6)]
    assert list(found.status["status_b"]) == ["error"] and len(found.only_a) == 1 and len(found.only_b) == 0
    assert compare_results(a, tmp_path / "changed", rtol=1e-3).values.empty  # within a looser tolerance
    assert "1 with another value" in found.summary()


def test_compare_command_exit_codes(tmp_path, capsys):
    from benchmark.cli import main

    rows = _rows("a", "m", "v", [0.5, 0.25], "true")
    a, b = _write(tmp_path / "a", rows), _write(tmp_path / "b", rows)
    assert main(["compare", str(a), str(b)]) == 0
    assert "identical within the tolerance" in capsys.readouterr().out
    _write(tmp_path / "b", _rows("a", "m", "v", [0.5, 0.3], "true"))
    assert main(["compare", str(a), str(b)]) == 1
