"""The statistical report of a run folder: per-target values, paired comparisons,
critical-difference diagrams and the detection track scored as a classifier.

Written by the runner's reporting step (:func:`write_report`) next to the leaderboards,
and by ``polysemy table --output`` for several runs combined:

* ``per_target.csv``: every (track, method, metric column, target, seed) value of a main
  column (status and reason kept, so a missing value says why);
* ``comparisons.csv`` / ``comparisons.md``: every pair of methods per (track, metric,
  column) with a direction (:func:`benchmark.evaluation.statistics.paired_comparisons`);
* ``figures/cd_<track>.png|pdf``: critical-difference diagrams, one panel per column;
* ``detection.csv`` / ``detection.md``: :mod:`benchmark.reporting.detection_table`;
* ``report.md``: the leaderboards, then all of the above in readable tables.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from benchmark.evaluation.statistics import (
    ALPHA,
    EXACT_MAX_N,
    MC_RESAMPLES,
    UNIT,
    paired_comparisons,
    seed_columns,
    target_values,
)
from benchmark.reporting.leaderboards import DASH, normalise

PER_TARGET_COLUMNS = ["track", "model", "layer", "dataset", "target", "method", "method_params", "label",
                      "metric", "column", "higher_is_better"]


def per_target_table(df: pd.DataFrame) -> pd.DataFrame:
    """Every value of a main column, one row per (track, method, metric column, target,
    seed), with ``status`` and ``reason``; seed keys are whatever seed columns exist."""
    df = normalise(df)
    rows = df[df["main"].astype(bool)]
    keep = PER_TARGET_COLUMNS + seed_columns(rows) + ["value", "status", "reason"]
    out = rows[keep].copy()
    out["higher_is_better"] = out["higher_is_better"].map({True: "true", False: "false"}).fillna("")
    return out.sort_values(["track", "metric", "column", "label", "model", "layer", "dataset", "target"],
                           kind="stable").reset_index(drop=True)


def _fmt(x: float) -> str:
    from benchmark.reporting.table_formats import fmt_number

    return DASH if x is None or not math.isfinite(x) else fmt_number(x)


def _esc(text: str) -> str:
    return str(text).replace("|", "\\|")


def per_target_markdown(df: pd.DataFrame) -> str:
    """Per track and main column: targets x methods (each target's seeds averaged)."""
    values = target_values(normalise(df))
    lines = []
    for track, t in values.groupby("track", sort=False):
        lines += [f"### Per-target values, track {track}", ""]
        several = t["model"].nunique() > 1  # targets of several models (or seeds): name the model
        for (metric, column), g in t.groupby(["metric", "column"], sort=False):
            g = g.assign(target=g["model"] + " " + g["target"]) if several else g
            wide = g.pivot_table(index="target", columns="label", values="value", aggfunc="mean", sort=False)
            methods = list(wide.columns)
            lines += [f"**{_esc(metric)} / {_esc(column)}**", "",
                      "| target | " + " | ".join(_esc(m) for m in methods) + " |",
                      "|:--" + "|--:" * len(methods) + "|"]
            lines += [f"| {_esc(target)} | " + " | ".join(_fmt(row[m]) for m in methods) + " |"
                      for target, row in wide.iterrows()]
            lines.append("")
    return "\n".join(lines)


def comparisons_markdown(cmp: pd.DataFrame) -> str:
    """Readable paired comparisons: one table per (track, metric, column)."""
    lines = []
    for (track, metric, column), g in cmp.groupby(["track", "metric", "column"], sort=False):
        arrow = "↑" if g["higher_is_better"].iloc[0] else "↓"
        lines += [f"**Track {track}: {_esc(metric)} / {_esc(column)} {arrow}**", "",
                  "| A | B | targets | mean A − B [95% CI] | p | p (Holm) | verdict |",
                  "|:--|:--|--:|--:|--:|--:|:--|"]
        for r in g.itertuples():
            diff = _fmt(r.diff) + (f" [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]" if math.isfinite(r.ci_low) else "")
            verdict = (f"{r.better} better" if r.significant else
                       ("untestable (< 2 common targets)" if not math.isfinite(r.p) else "no significant difference"))
            lines.append(f"| {_esc(r.method_a)} | {_esc(r.method_b)} | {r.n_common} | {diff} | "
                         f"{_p(r.p)} | {_p(r.p_holm)} | {verdict} |")
        lines.append("")
    clusters = int(cmp["clusters"].max()) if "clusters" in cmp and len(cmp) else 0
    legend = (f"Paired over common targets (seeds averaged per target first). CI: percentile bootstrap of "
              f"the mean difference. p: two-sided sign-flip test of the mean difference (exact over all sign "
              f"patterns up to {EXACT_MAX_N} units, else Monte Carlo, {MC_RESAMPLES:,} draws); Holm "
              f"over the comparisons of one column; significant at {ALPHA:g}."
              + (f" Tracks whose targets come from several models ({clusters} here) resample and flip "
                 "whole models (clusters): CI two-stage over models then targets." if clusters else ""))
    return "\n".join(lines + [legend, ""]) if lines else "No comparisons (no column with a direction).\n"


def _p(p: float) -> str:
    return DASH if not math.isfinite(p) else (f"{p:.3f}" if p >= 1e-3 else f"{p:.1e}")


def cd_panels(values: pd.DataFrame, cmp: pd.DataFrame, track: str) -> list[tuple[str, dict, pd.DataFrame]]:
    """One critical-difference panel per directed column of ``track``: the methods with
    the most targets in common (a method missing a target is dropped while fewer than two
    targets are complete), their average rank over those complete targets (1 = best) and
    the Holm-adjusted p-values of their paired comparisons. Columns where fewer than two
    methods or two targets remain are skipped."""
    panels = []
    t = values[values["track"] == track]
    for (metric, column), g in t.groupby(["metric", "column"], sort=False):
        higher = g["higher_is_better"].iloc[0]
        if higher is None or (isinstance(higher, float) and math.isnan(higher)):
            continue
        wide = g.pivot_table(index=list(UNIT), columns="label", values="value", aggfunc="mean", sort=False)
        while wide.shape[1] >= 2 and len(wide.dropna()) < 2:
            wide = wide.drop(columns=wide.notna().sum().idxmin())
        wide = wide.dropna()
        if wide.shape[1] < 2 or len(wide) < 2:
            continue
        ranks = (wide.rank(axis=1, ascending=not higher).mean()).to_dict()
        methods = list(wide.columns)
        p = pd.DataFrame(1.0, index=methods, columns=methods)
        col = cmp[(cmp["track"] == track) & (cmp["metric"] == metric) & (cmp["column"] == column)]
        for r in col.itertuples():
            if r.method_a in p.index and r.method_b in p.index and math.isfinite(r.p_holm):
                p.loc[r.method_a, r.method_b] = p.loc[r.method_b, r.method_a] = r.p_holm
        panels.append((f"{metric} / {column} ({'higher' if higher else 'lower'} is better; "
                       f"{len(wide)} targets)", ranks, p))
    return panels


def write_report(df: pd.DataFrame, out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write the files listed in the module docstring into ``out_dir`` atomically;
    returns their paths by name."""
    from benchmark.reporting.plots import cd_diagram
    from benchmark.storage.cache import atomic_write

    df = normalise(df)
    out = Path(out_dir)
    values = target_values(df)
    cmp = paired_comparisons(values, seed=seed)
    paths: dict[str, Path] = {}

    def text(name: str, body: str) -> None:
        paths[name] = out / name
        atomic_write(paths[name], lambda p: p.write_text(body, encoding="utf-8"))

    text("per_target.csv", per_target_table(df).to_csv(index=False, lineterminator="\n"))
    text("comparisons.csv", cmp.to_csv(index=False, lineterminator="\n"))
    cmp_md = comparisons_markdown(cmp)
    text("comparisons.md", "# Paired comparisons\n\n" + cmp_md)
    figures = []
    for track in dict.fromkeys(values["track"]):
        panels = cd_panels(values, cmp, track)
        if panels:
            slug = re.sub(r"[^A-Za-z0-9]+", "-", track).strip("-")
            png, _ = cd_diagram(panels, out / "figures" / f"cd_{slug}", f"Critical differences, track {track} "
                                f"(bar: no significant difference, Holm-corrected sign-flip test, alpha {ALPHA:g})",
                                alpha=ALPHA)
            paths[f"cd_{slug}"] = png
            figures.append(f"![critical differences, track {track}](figures/{png.name})")
    from benchmark.reporting.detection_table import detection_markdown, detection_table

    detection = detection_table(df)
    det_md = ""
    if not detection.empty:
        text("detection.csv", detection.to_csv(index=False, lineterminator="\n"))
        det_md = detection_markdown(detection, df)
        text("detection.md", "# Detection track as a classifier\n\n" + det_md)
    board = (out / "leaderboard.md").read_text(encoding="utf-8") if (out / "leaderboard.md").exists() else ""
    parts = [board] + (["# Detection track as a classifier", "", det_md] if det_md else [])
    parts += ["# Paired comparisons", "", cmp_md, *figures, "", "# Per-target values", "", per_target_markdown(df)]
    text("report.md", "\n".join(parts))
    return paths
