"""Sensitivity sweeps: one hyperparameter of one method varied over a few values on the
default run, each value a normal run folder, combined into one table per parameter.

A sweep file (TOML; ``benchmark/configs/sweeps/sensitivity.toml`` is the default)::

    base = "synthetic"                    # the run config every value starts from
    tracks = ["planted", "pairs", "layer"]
    set = { "figures.enabled" = false }   # optional dotted overrides of the base config

    [[sweep]]
    method = "pure"
    param = "k"
    values = [2, 3, 4]

Each value runs ``base`` with ``methods = [method]`` and ``method_params.METHOD.PARAM =
value`` into ``OUT/<method>-<param>=<value>/``: a finished value is never recomputed (the
runner resumes from its parts) and the capture statistics come from the shared cache.
``sensitivity.md`` then holds, per sweep, the honest leaderboard of every track with
rows ``method(param=value)`` (:mod:`benchmark.reporting.leaderboards`: CIs, coverage, bolding rule), and,
when a detection run is given, precision/recall/F1 over gamma (the detection metrics'
sweep, 0.30..0.70).
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from benchmark.core.config import CONFIG_DIR, ConfigError, packaged_toml

SWEEP_DIR = CONFIG_DIR / "sweeps"
DEFAULT_SWEEP_FILE = "sensitivity"
_TOP_KEYS = {"base", "tracks", "set", "sweep"}
_SWEEP_KEYS = {"method", "param", "values"}


@dataclass(frozen=True)
class Sweep:
    """One hyperparameter of one method and the values it takes."""

    method: str
    param: str
    values: tuple

    def folder(self, value: Any) -> str:
        return f"{self.method}-{self.param}={value}"


@dataclass(frozen=True)
class SweepPlan:
    base: str = "synthetic"
    tracks: tuple[str, ...] = ("planted", "pairs", "layer")
    overrides: Mapping[str, Any] = field(default_factory=dict)
    sweeps: tuple[Sweep, ...] = ()


def sweep_path(name_or_path: str | None) -> Path:
    """A sweep file by path, or by name from ``benchmark/configs/sweeps``."""
    return packaged_toml(name_or_path or DEFAULT_SWEEP_FILE, SWEEP_DIR, "sweep")


def load_sweeps(name_or_path: str | None = None) -> SweepPlan:
    """Parse and check a sweep file (unknown keys, unknown methods or parameters, empty
    value lists are errors that say what is allowed)."""
    from benchmark.core.registry import METHODS, hyperparameters
    from benchmark.tracks import TRACKS

    path = sweep_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from err
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {path}; valid: {sorted(_TOP_KEYS)}")
    tracks = tuple(data.get("tracks", SweepPlan.tracks))
    bad = [t for t in tracks if t not in TRACKS]
    if bad:
        raise ConfigError(f"unknown track(s) {bad} in {path}; tracks: {', '.join(TRACKS)}")
    sweeps = []
    for i, entry in enumerate(data.get("sweep", [])):
        if set(entry) != _SWEEP_KEYS:
            raise ConfigError(f"sweep entry {i} of {path} must have exactly the keys {sorted(_SWEEP_KEYS)}, "
                              f"got {sorted(entry)}")
        valid = set(hyperparameters(METHODS.get(entry["method"])))
        if entry["param"] not in valid:
            raise ConfigError(f"method {entry['method']!r} has no parameter {entry['param']!r}; "
                              f"valid: {', '.join(sorted(valid))}")
        if not isinstance(entry["values"], list) or not entry["values"]:
            raise ConfigError(f"sweep entry {i} of {path}: values must be a non-empty list")
        sweeps.append(Sweep(entry["method"], entry["param"], tuple(entry["values"])))
    if not sweeps:
        raise ConfigError(f"{path} defines no [[sweep]] entry")
    return SweepPlan(str(data.get("base", SweepPlan.base)), tracks, dict(data.get("set", {})), tuple(sweeps))


def value_config(plan: SweepPlan, sweep: Sweep, value: Any, output: Path):
    """The run config of one value of one sweep."""
    from benchmark.core.config import load_config
    from benchmark.tracks import TRACKS

    overrides = dict(plan.overrides)
    overrides.update({f"tracks.{t}.enabled": t in plan.tracks for t in TRACKS})
    overrides.update({"methods": [sweep.method], f"method_params.{sweep.method}.{sweep.param}": value,
                      "output_dir": str(output)})
    return load_config(plan.base, overrides)


def run_sweeps(plan: SweepPlan, out_dir: str | Path, cache=None, progress: bool = True,
               detection_run: str | Path | None = None) -> Path:
    """Run every value of every sweep (resuming finished ones) and write
    ``sensitivity.md``; returns its path."""
    from benchmark.run.runner import Runner

    out = Path(out_dir)
    for sweep in plan.sweeps:
        for value in sweep.values:
            folder = out / sweep.folder(value)
            Runner(value_config(plan, sweep, value, folder), folder, cache=cache, progress=progress).run()
    return write_sensitivity(plan, out, detection_run)


def write_sensitivity(plan: SweepPlan, out_dir: Path, detection_run: str | Path | None = None) -> Path:
    """``sensitivity.md`` from finished sweep folders (and a detection run's gamma sweep)."""
    from benchmark.reporting.detection_table import _sweep
    from benchmark.reporting.leaderboards import leaderboard, load_results
    from benchmark.reporting.table_formats import render
    from benchmark.storage.cache import atomic_write

    lines = ["# Sensitivity", "", f"Base config: {plan.base}; tracks: {', '.join(plan.tracks)}.", ""]
    for sweep in plan.sweeps:
        df = load_results([out_dir / sweep.folder(v) for v in sweep.values])
        lines += [f"## {sweep.method}: {sweep.param} in {list(sweep.values)}", ""]
        for track in dict.fromkeys(df["track"]):
            if df.loc[df["track"] == track, "main"].any():
                lines.append(render(leaderboard(df, track), caption=f"{sweep.method}, {sweep.param} sweep, "
                                                                    f"track {track}."))
    if detection_run is not None:
        df = load_results(detection_run)
        lines += ["## gamma (detection rule: polysemantic iff score < gamma)", ""]
        for truth in dict.fromkeys(df.loc[df["track"] == "detection", "metric"]):
            lines += _sweep(df, truth)
    path = out_dir / "sensitivity.md"
    atomic_write(path, lambda p: p.write_text("\n".join(lines), encoding="utf-8"))
    return path
