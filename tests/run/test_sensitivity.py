"""Sensitivity sweeps: the sweep file is checked, each value becomes a run config, and the
table combines the value folders with one row per value."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from benchmark.core.config import ConfigError
from benchmark.reporting.leaderboards import COLUMNS
from benchmark.run.sensitivity import Sweep, SweepPlan, load_sweeps, value_config, write_sensitivity


def test_default_sweep_file_and_value_config(tmp_path):
    plan = load_sweeps()
    assert {(s.method, s.param) for s in plan.sweeps} == {("activation_clustering", "threshold"), ("pure", "k")}
    pure = next(s for s in plan.sweeps if s.method == "pure")
    cfg = value_config(plan, pure, 3, tmp_path / "v")
    assert cfg.methods == ("pure",) and dict(cfg.method_params) == {"pure": {"k": 3}}
    assert not cfg.tracks.detection.enabled and cfg.tracks.planted.enabled and not cfg.figures.enabled
    assert cfg.output_dir == str(tmp_path / "v")


@pytest.mark.parametrize("text, match", [
    ('bogus = 1\n[[sweep]]\nmethod = "pure"\nparam = "k"\nvalues = [2]', "unknown key"),
    ('[[sweep]]\nmethod = "pure"\nparam = "kk"\nvalues = [2]', "has no parameter 'kk'"),
    ('[[sweep]]\nmethod = "pure"\nparam = "k"\nvalues = []', "non-empty list"),
    ('[[sweep]]\nmethod = "nosuch"\nparam = "k"\nvalues = [2]', "nosuch"),
    ('tracks = ["planted", "moon"]\n[[sweep]]\nmethod = "pure"\nparam = "k"\nvalues = [2]', "unknown track"),
    ('base = "synthetic"', "no \\[\\[sweep\\]\\]"),
])
def test_bad_sweep_files(tmp_path, text, match):
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises((ConfigError, KeyError, ValueError), match=match):
        load_sweeps(str(path))


def _fake_run(folder: Path, k: int, values: list[float]) -> None:
    folder.mkdir(parents=True)
    rows = [dict(track="planted", model="m", layer="l", dataset="d", target=f"t{i}", method="pure",
                 method_params=f'{{"k": {k}, "seed": 0}}', metric="rec", column="ari", value=v,
                 higher_is_better="true", status="ok", reason="", seed=0, main="true")
            for i, v in enumerate(values)]
    pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(folder / "results.csv", index=False)


def test_sensitivity_table_one_row_per_value(tmp_path):
    sweep = Sweep("pure", "k", (2, 3))
    _fake_run(tmp_path / sweep.folder(2), 2, [0.9, 0.8, 0.7])
    _fake_run(tmp_path / sweep.folder(3), 3, [0.5, 0.4, 0.6])
    md = write_sensitivity(SweepPlan(sweeps=(sweep,)), tmp_path).read_text()
    assert "## pure: k in [2, 3]" in md
    assert "| pure(k=2) | <u>0.800 [" in md and "| pure(k=3) | <u>0.500 [" in md  # 3 targets: tied
