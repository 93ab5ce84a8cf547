"""The detection track as a classifier table: one row per (ground truth, detector), the
methods' polysemanticity scores next to the trivial detectors, read from the results rows
of the detection metrics (``wordnet_gamma``, ``factor_gamma``; :mod:`metrics._detection`
defines every number).

Columns: pairs scored and unscored (a method that cannot score a pair, e.g. an all-zero
ARV, leaves it out of its own numbers; the count is shown, never dropped silently),
positives and prevalence, AUROC and AUPRC with their 95 % bootstrap intervals over pairs,
and precision/recall/F1 at the metric's gamma. The trivial detectors ("always
polysemantic", "random") are scored by the metric on the pairs of the method that scored
the most pairs. With several seeds or runs, values are averaged.
"""
from __future__ import annotations

import math

import pandas as pd

from benchmark.reporting.leaderboards import DASH, normalise

FIELDS = ("pairs", "pairs_unscored", "positives", "prevalence", "auroc", "auroc_ci_low", "auroc_ci_high",
          "auprc", "auprc_ci_low", "auprc_ci_high", "precision", "recall", "f1")
TRIVIAL = {"always_": "always polysemantic (trivial)", "random_": "random scores (trivial)"}
TABLE_COLUMNS = ["truth", "detector", "kind"] + list(FIELDS)


def _values(rows: pd.DataFrame) -> dict[str, float]:
    ok = rows[rows["status"] == "ok"]
    return ok.groupby("column")["value"].mean().to_dict()


def detection_table(df: pd.DataFrame) -> pd.DataFrame:
    """Rows (truth, detector, kind = method | trivial) with the FIELDS (NaN where undefined).
    Empty when the results hold no detection metric with an ``auroc`` column."""
    df = normalise(df)
    det = df[df["track"] == "detection"]
    records = []
    for truth, t in det.groupby("metric", sort=False):
        if not (t["column"] == "auroc").any():
            continue
        best: tuple[float, dict] | None = None
        for label, g in t.groupby("label", sort=False):
            v = _values(g)
            if "pairs" not in v:
                continue
            records.append(dict(truth=truth, detector=label, kind="method", **{f: v.get(f, math.nan) for f in FIELDS}))
            if best is None or v["pairs"] > best[0]:
                best = (v["pairs"], v)
        if best is None:
            continue
        v = best[1]
        for prefix, name in TRIVIAL.items():
            rec = dict(truth=truth, detector=name, kind="trivial",
                       **{f: v.get(prefix + f, math.nan) for f in FIELDS})
            rec.update(pairs=v["pairs"], pairs_unscored=0.0, positives=v.get("positives", math.nan),
                       prevalence=v.get("prevalence", math.nan))
            records.append(rec)
    return pd.DataFrame.from_records(records, columns=TABLE_COLUMNS)


def _num(x: float, digits: int = 3) -> str:
    return DASH if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _ci(row: pd.Series, key: str) -> str:
    text = _num(row[key])
    if math.isfinite(row[f"{key}_ci_low"]):
        text += f" [{_num(row[f'{key}_ci_low'])}, {_num(row[f'{key}_ci_high'])}]"
    return text


def _sweep(df: pd.DataFrame, truth: str) -> list[str]:
    rows = df[(df["track"] == "detection") & (df["metric"] == truth) & (df["status"] == "ok")]
    parts = rows["column"].str.extract(r"^(?P<kind>precision|recall|f1)@(?P<gamma>[0-9.]+)$")
    rows = rows.assign(kind=parts["kind"], gamma=parts["gamma"]).dropna(subset=["kind"])
    if rows.empty:
        return []
    wide = rows.pivot_table(index=["label", "gamma"], columns="kind", values="value", aggfunc="mean")
    gammas = sorted(set(rows["gamma"]), key=float)
    lines = [f"Precision / recall / F1 over the gamma sweep ({truth}):", "",
             "| detector | " + " | ".join(f"γ = {g}" for g in gammas) + " |", "|:--" + "|--:" * len(gammas) + "|"]
    for label in dict.fromkeys(rows["label"]):
        cells = []
        for g in gammas:
            r = wide.loc[(label, g)] if (label, g) in wide.index else pd.Series(dtype=float)
            cells.append(" / ".join(_num(r.get(k, math.nan), 2) for k in ("precision", "recall", "f1")))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + [""]


def detection_markdown(table: pd.DataFrame, df: pd.DataFrame) -> str:
    """Readable tables: per truth, the classifier table and the gamma sweep."""
    df = normalise(df)
    lines = []
    for truth, t in table.groupby("truth", sort=False):
        lines += [f"**Ground truth: {truth}**", "",
                  "| detector | pairs scored | unscored | positives (prevalence) | AUROC [95% CI] | "
                  "AUPRC [95% CI] | precision | recall | F1 |", "|:--" + "|--:" * 8 + "|"]
        for _, r in t.iterrows():
            lines.append(f"| {r['detector']} | {int(r['pairs'])} | "
                         f"{int(r['pairs_unscored']) if math.isfinite(r['pairs_unscored']) else DASH} | "
                         f"{int(r['positives'])} ({_num(r['prevalence'])}) | {_ci(r, 'auroc')} | {_ci(r, 'auprc')} | "
                         f"{_num(r['precision'])} | {_num(r['recall'])} | {_num(r['f1'])} |")
        lines.append("")
        lines += _sweep(df, truth)
    det = df[df["track"] == "detection"]
    unscored = sorted(set(det.loc[det["status"] == "not_applicable", "label"]) - set(table["detector"]))
    legend = ("AUROC/AUPRC: the method's score (low = polysemantic) as a classifier of the truth; chance is "
              "0.5 / the prevalence. CI: 95% percentile bootstrap over pairs. Precision/recall/F1: "
              "polysemantic iff score < gamma (the metric's gamma, 0.5 by default). Trivial detectors are "
              "scored on the pairs of the method with most pairs scored.")
    if unscored:
        legend += " No polysemanticity score (not in the table): " + ", ".join(unscored) + "."
    return "\n".join(lines + [legend, ""])
