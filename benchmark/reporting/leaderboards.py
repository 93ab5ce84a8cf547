"""Leaderboards as pure pivots of saved results (the runner's tidy ``results.csv``).

One row of a results table is one number: (track, model, layer, dataset, target, method,
method_params, metric, column, seed) -> value, with the column's direction
(``higher_is_better``), a ``status`` (ok / not_applicable / error) and ``main`` (whether
the column is a declared metric column; diagnostics are not shown). From such rows:

* :func:`load_results` concatenates several runs and labels methods (name plus the
  hyperparameters that differ between runs of the same method);
* :func:`leaderboard` pivots one track: methods x (metric, column); a cell is the mean
  over targets (each target's seeds averaged first) with a seeded 95 % percentile-bootstrap
  interval over targets (default) or its standard error (sd / sqrt(n), ddof = 1), the
  spread over seeds, and the marks of the bolding rule (:func:`benchmark.evaluation.statistics.leaders`:
  bold only a method covering every target and significantly better than every other one
  by a Holm-corrected paired sign-flip test; otherwise the tied leaders are marked);
* :mod:`benchmark.reporting.table_formats` renders boards as Markdown, LaTeX (booktabs) or CSV and
  writes all three atomically.

A metric that does not apply to a method shows "—", never 0. Nothing here needs a model
or a registry: every fact shown is in the rows.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from benchmark.core.errors import InputError, MissingFileError
from benchmark.evaluation.statistics import (
    N_BOOT,
    UNIT,
    bootstrap_ci,
    cluster_bootstrap_ci,
    leaders,
    paired_comparisons,
    seed_clustered,
    seed_columns,
    seed_spread,
    target_values,
)

COLUMNS = ("track", "model", "layer", "dataset", "target", "method", "method_params",
           "metric", "column", "value", "higher_is_better", "status", "reason", "seed", "main")
STATUSES = ("ok", "not_applicable", "error")
UNCERTAINTIES = ("bootstrap", "sem")
FORMATS = ("markdown", "latex", "csv")
DASH = "—"
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


# --------------------------------------------------------------------------- loading
def load_results(run_dirs: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """Concatenate the ``results.csv`` of one or several run folders (or csv paths).

    Adds ``run`` (the folder) and ``label`` (see :func:`method_labels`); types are
    normalised as in :func:`normalise`.
    """
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    frames = []
    for run in run_dirs:
        run = Path(run)
        csv = run / "results.csv" if run.is_dir() else run
        if not csv.is_file():
            raise MissingFileError(f"no results table at {csv} (expected a run folder holding "
                                    "results.csv, or the path of a results csv)")
        raw = pd.read_csv(csv, dtype=str, keep_default_na=False)
        missing = _missing(raw)
        if missing:
            raise InputError(f"{csv} lacks columns {missing}; a results table has {list(COLUMNS)}")
        raw["run"] = str(csv.parent)
        frames.append(raw)
    if not frames:
        raise InputError("load_results needs at least one run folder")
    return normalise(pd.concat(frames, ignore_index=True))


def _missing(df: pd.DataFrame) -> list[str]:
    """Required columns that ``df`` lacks; ``seed`` may be replaced by ``*_seed`` columns."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing == ["seed"] and seed_columns(df):
        return []
    return missing


def _truth(v: Any, what: str, none_ok: bool) -> bool | None:
    """True/False from a bool or 'true'/'false' text; None from ''/NaN when allowed."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    s = "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v).strip().lower()
    if s in _TRUE or s in _FALSE:
        return s in _TRUE
    if none_ok and s in ("", "none", "nan"):
        return None
    raise InputError(f"{what} must be 'true' or 'false'" + (" or '' (no direction)" if none_ok else "")
                     + f", got {v!r}")


def normalise(df: pd.DataFrame) -> pd.DataFrame:
    """A typed copy: value float (NaN where empty), seed int, main bool,
    higher_is_better True/False/None, text columns str, ``label`` added if missing
    (:func:`method_labels`). Checks columns and statuses."""
    missing = _missing(df)
    if missing:
        raise InputError(f"results lack columns {missing}; a results table has {list(COLUMNS)}")
    out = df.copy()
    for c in ("track", "model", "layer", "dataset", "target", "method", "method_params",
              "metric", "column", "status", "reason"):
        out[c] = out[c].fillna("").astype(str)
    value = out["value"]
    if not pd.api.types.is_numeric_dtype(value):  # text from a csv: "" means NaN
        value = value.astype(object).map(lambda v: np.nan if v is None or str(v).strip() == "" else v)
    out["value"] = pd.to_numeric(value, errors="raise").astype(float)
    for key in seed_columns(out):  # "seed" and any "*_seed" key (data, model, method seeds)
        out[key] = pd.to_numeric(out[key], errors="raise").astype(int)
    out["main"] = [bool(_truth(v, "main", False)) for v in out["main"]]
    out["higher_is_better"] = pd.Series([_truth(v, "higher_is_better", True)
                                         for v in out["higher_is_better"]], index=out.index, dtype=object)
    bad = sorted(set(out["status"]) - set(STATUSES))
    if bad:
        raise InputError(f"unknown status {bad}; allowed: {list(STATUSES)}")
    if "label" not in out:
        out["label"] = method_labels(out)
    return out


def _params(text: str) -> dict:
    try:
        params = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        params = None
    if not isinstance(params, dict):
        raise InputError(f"method_params must be a JSON object (or empty), got {text!r}")
    return params


def canonical(params: dict) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


def _show(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True, separators=(",", ":"))


def method_labels(df: pd.DataFrame) -> pd.Series:
    """Row label per result row: the method name, plus ``(key=value, ...)`` for the
    hyperparameters whose values differ between the parameter sets of that method
    (just the name when every row of the method has the same parameters). Seeds
    (``seed``, ``*_seed``) are replicates, not hyperparameters: runs that differ only in
    a method seed share a label, so their values are averaged per target like any seed."""
    labels = df["method"].astype(str).copy()
    for method, rows in df.groupby("method", sort=False):
        parsed = {}
        for text in dict.fromkeys(rows["method_params"]):
            params = _params(text)
            parsed[text] = {k: v for k, v in params.items() if not (k == "seed" or k.endswith("_seed"))}
        if len({canonical(p) for p in parsed.values()}) < 2:
            continue
        keys = sorted(set().union(*parsed.values()))
        differ = [k for k in keys
                  if len({_show(p[k]) if k in p else "\0unset" for p in parsed.values()}) > 1]
        names = {s: f"{method}(" + ", ".join(
            f"{k}={_show(p[k]) if k in p else 'unset'}" for k in differ) + ")"
            for s, p in parsed.items()}
        labels.loc[rows.index] = rows["method_params"].map(names)
    return labels


# ----------------------------------------------------------------------- aggregation
def sem(values: Iterable[float]) -> float:
    """Standard error of the mean, sd(ddof=1) / sqrt(n); NaN for fewer than 2 values."""
    x = np.asarray(list(values), dtype=float)
    return float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) >= 2 else math.nan


def _directions(rows: pd.DataFrame) -> dict[tuple[str, str], bool | None]:
    out: dict[tuple[str, str], bool | None] = {}
    for key, g in rows.groupby(["metric", "column"], sort=False):
        seen = set(g["higher_is_better"])
        if len(seen) > 1:
            raise InputError(f"metric {key[0]!r} column {key[1]!r} has conflicting "
                             f"higher_is_better values {sorted(map(str, seen))}")
        out[key] = seen.pop()
    return out


def leaderboard(df: pd.DataFrame, track: str | None = None, uncertainty: str = "bootstrap",
                seed: int = 0, n_boot: int = N_BOOT) -> pd.DataFrame:
    """Methods x (metric, column, stat) for one track (main columns only).

    Stats: ``mean``, then ``ci_low``/``ci_high`` (bootstrap over targets) or ``sem``, then
    ``n`` (targets with a value), ``n_total`` (targets the method was scored on),
    ``n_error``, ``n_seeds`` (most seed combinations behind one target) and ``seed_sd``
    (sd over seeds of the mean over targets; NaN with one seed). Only rows with status ok
    and a finite value count. A method scored on a single target (the detection track's
    "*") takes its interval from the metric's own ``<column>_ci_low``/``_ci_high`` columns
    when it reports them (e.g. a bootstrap over detection pairs). ``board.attrs`` holds the
    track, uncertainty, directions, ``marks`` (:func:`benchmark.evaluation.statistics.leaders` per
    column) and the datasets, models, layers and metric labels for captions.
    """
    if uncertainty not in UNCERTAINTIES:
        raise InputError(f"uncertainty must be one of {UNCERTAINTIES}, got {uncertainty!r}")
    df = normalise(df)
    tracks = list(dict.fromkeys(df["track"]))
    if track is None:
        if len(tracks) != 1:
            raise InputError(f"results hold tracks {tracks}; pass track= one of them")
        track = tracks[0]
    elif track not in tracks:
        raise InputError(f"no results for track {track!r}; tracks present: {tracks}")
    everything = df[df["track"] == track]
    rows = everything[everything["main"].astype(bool)]
    if rows.empty:
        raise InputError(f"track {track!r} has no main metric columns")
    directions = _directions(rows)
    # a (metric, column) that applies to no method of this track is left out, not a column of dashes
    scored = rows[((rows["status"] == "ok") & np.isfinite(rows["value"])) | (rows["status"] == "error")]
    present = set(zip(scored["metric"], scored["column"]))
    if present:
        directions = {key: d for key, d in directions.items() if key in present}
    labels = list(dict.fromkeys(rows["label"]))
    spread = ("sem",) if uncertainty == "sem" else ("ci_low", "ci_high")
    stats = ("mean",) + spread + ("n", "n_total", "n_error", "n_seeds", "seed_sd")
    columns = pd.MultiIndex.from_tuples([(m, c, s) for (m, c) in directions for s in stats],
                                        names=["metric", "column", "stat"])
    board = pd.DataFrame(np.nan, index=pd.Index(labels, name="method"), columns=columns)
    for m, c, s in columns:
        if s.startswith("n"):
            board[(m, c, s)] = 0.0
    values = target_values(rows)
    clustered = seed_clustered(values["model"])  # several model seeds: resample models, then targets
    seeds = seed_spread(rows).set_index(["label", "metric", "column"])
    cells: dict[tuple[str, str, str], dict] = {}
    by_cell = dict(list(values.groupby(["label", "metric", "column"], sort=False)))
    empty = values.iloc[:0]
    for (label, metric, column), g in rows.groupby(["label", "metric", "column"], sort=False):
        if (metric, column) not in directions:
            continue
        mine = by_cell.get((label, metric, column), empty)
        x = mine["value"].to_numpy()
        errors = g[g["status"] == "error"].groupby(list(UNIT)).ngroups
        cell = {"n": len(x), "n_total": g.groupby(list(UNIT)).ngroups, "n_error": errors,
                "mean": float(x.mean()) if len(x) else math.nan,
                "n_seeds": int(mine["n_seeds"].max()) if len(x) else 0,
                "seed_sd": seeds.loc[(label, metric, column), "seed_sd"] if len(x) else math.nan}
        if uncertainty == "sem":
            cell["sem"] = sem(x)
        else:
            cell["ci_low"], cell["ci_high"] = (
                cluster_bootstrap_ci(x, mine["model"].to_numpy(), seed=seed, n_boot=n_boot) if clustered
                else bootstrap_ci(x, seed=seed, n_boot=n_boot))
            if len(x) == 1:
                cell["ci_low"], cell["ci_high"] = _own_interval(everything, label, metric, column)
        cells[(label, metric, column)] = cell
    if cells:  # one assignment per stat column (a .loc write per cell cost seconds per report)
        positions = {label: i for i, label in enumerate(board.index)}
        grid = {key: board[key].to_numpy(dtype=float, copy=True) for key in board.columns}
        for (label, metric, column), cell in cells.items():
            for stat, v in cell.items():
                grid[(metric, column, stat)][positions[label]] = v
        board = pd.DataFrame(grid, index=board.index, columns=board.columns)
    n_targets = rows.groupby(list(UNIT)).ngroups
    comparisons = paired_comparisons(values, seed=seed, n_boot=n_boot)
    marks = {}
    for (metric, column), higher in directions.items():
        col = comparisons[(comparisons["metric"] == metric) & (comparisons["column"] == column)]
        marks[(metric, column)] = leaders(board[(metric, column, "mean")].to_dict(),
                                          board[(metric, column, "n")].astype(int).to_dict(),
                                          n_targets, higher, col)
    board.attrs = {key: _shared(value) for key, value in {
        "track": track, "uncertainty": uncertainty, "seed": seed, "n_boot": n_boot,
        "higher_is_better": directions, "marks": marks,
        "datasets": list(dict.fromkeys(rows["dataset"])), "models": list(dict.fromkeys(rows["model"])),
        "layers": list(dict.fromkeys(rows["layer"])), "metrics": list(dict.fromkeys(rows["metric"])),
        "n_targets": n_targets, "clusters": int(values["model"].nunique()) if clustered else 0,
        "own_interval": n_targets == 1 and uncertainty == "bootstrap" and bool(
            board[[k for k in board.columns if k[2] == "ci_low"]].notna().to_numpy().any()),
    }.items()}
    return board


class _SharedDict(dict):
    """A board attribute pandas does not deep-copy: pandas deep-copies ``attrs`` into every
    frame and series derived from the board (every column lookup), which cost seconds per
    report with the marks of 40 columns. Board attributes are never mutated after
    :func:`leaderboard` builds them, so sharing them is safe."""

    def __deepcopy__(self, memo: dict) -> "_SharedDict":
        return self


class _SharedList(list):
    """The list counterpart of :class:`_SharedDict`."""

    def __deepcopy__(self, memo: dict) -> "_SharedList":
        return self


def _shared(value):
    return _SharedDict(value) if isinstance(value, dict) else _SharedList(value) if isinstance(value, list) else value


def _own_interval(rows: pd.DataFrame, label: str, metric: str, column: str) -> tuple[float, float]:
    """The metric's own interval for a single-target cell (``<column>_ci_low``/``_ci_high``
    rows of the same method and metric), NaNs when it reports none."""
    mine = rows[(rows["label"] == label) & (rows["metric"] == metric) & (rows["status"] == "ok")]
    found = []
    for end in ("ci_low", "ci_high"):
        v = mine.loc[mine["column"] == f"{column}_{end}", "value"]
        found.append(float(v.mean()) if len(v) and np.isfinite(v).all() else math.nan)
    return found[0], found[1]
