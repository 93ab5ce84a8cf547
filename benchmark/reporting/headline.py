"""Headline tables and verdicts: what a paper can print about each track.

Per track, a headline table of at most ``MAX_COLUMNS`` metric columns: the planted truth's
questions first (assignment, decomposition), then the label-free columns that pass the
headline rule (:mod:`benchmark.evaluation.eligibility`). Rows are the competitors (role
``method`` and ``generic``), then the label floor and the no-op splits, each with its role;
the ceilings (splits built from the truth) follow as reference rows that take no part in the
bolding. Columns show human titles with arrows, methods their citation key, cells
"mean [95% CI]"; bold and underline follow :func:`benchmark.evaluation.statistics.leaders`
over the non-ceiling rows (cluster-aware when the targets come from several models). Rows with
no value in any headline column are dropped and named in a footnote.

The verdict paragraph (:func:`verdict`) is generated from the same numbers: per headline
column the leading competitor, its difference to the runner-up with the paired CI and the
Holm-adjusted p, whether it beats the label floor (if not, that is printed as a finding),
whether a no-op split does as well, and the ceilings. Every other column stays in the
appendix tables of :mod:`benchmark.reporting.table_formats`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import pandas as pd

from benchmark.core.errors import MissingFileError
from benchmark.evaluation.eligibility import method_of, metric_name
from benchmark.evaluation.statistics import ALPHA, paired_comparisons, target_values
from benchmark.reporting.leaderboards import DASH, leaderboard
from benchmark.reporting.table_formats import _cell_text, _tex, fmt_number, sign_flip_kind

MAX_COLUMNS = 6
COMPETITORS = ("method", "generic")
ROW_ORDER = ("method", "generic", "label_floor", "no_op", "ceiling")
ROLE_TAGS = {"label_floor": "label floor", "no_op": "no-op", "ceiling": "ceiling"}
DETECTION_COLUMNS = ("auprc", "f1")


@dataclass(frozen=True)
class HeadlineSpec:
    """What the headline needs beyond the results: method roles and citations, column titles,
    the truth questions (question -> (metric, column)) and the eligibility table."""

    roles: Mapping[str, str] = field(default_factory=dict)
    citations: Mapping[str, str] = field(default_factory=dict)
    titles: Mapping[tuple[str, str], str] = field(default_factory=dict)
    questions: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    eligibility: pd.DataFrame | None = None

    def role(self, label: str) -> str:
        return self.roles.get(method_of(label), "method")

    def display(self, label: str) -> str:
        name, cite = label, self.citations.get(method_of(label), "")
        tag = ROLE_TAGS.get(self.role(label))
        return name + (f" [{cite}]" if cite else "") + (f" ({tag})" if tag else "")

    def title(self, metric: str, column: str) -> str:
        """The metric's declared title of the column, else one spelled from the names
        (``activation_ratio``, ``cross_gating`` -> "Activation ratio: cross gating")."""
        declared = self.titles.get((metric_name(metric), column))
        if declared is not None:
            return declared
        name, _, params = str(metric).partition("[")
        spelled = name.replace("_", " ").capitalize() + (f" [{params}" if params else "")
        return f"{spelled}: {column.replace('_', ' ')}"


def spec_from_registry(eligibility: pd.DataFrame | None = None) -> HeadlineSpec:
    """A spec read from the registered plug-ins (``role``, ``citation``, ``titles``, ``questions``)."""
    from benchmark.core.registry import METHODS, METRICS, load_plugins

    load_plugins()
    methods = {n: METHODS.get(n) for n in METHODS.names()}
    metrics = {n: METRICS.get(n) for n in METRICS.names()}
    titles = {(n, c): t for n, cls in metrics.items() for c, t in cls.titles.items()}
    questions = {q: (n, c) for n, cls in metrics.items() for q, c in cls.questions.items()}
    return HeadlineSpec(roles={n: c.role for n, c in methods.items()},
                        citations={n: c.citation for n, c in methods.items() if c.citation},
                        titles=titles, questions=questions, eligibility=eligibility)


def headline_columns(part: pd.DataFrame, track: str, spec: HeadlineSpec) -> list[tuple[str, str]]:
    """The (metric label, column) pairs of the track's headline table, at most MAX_COLUMNS."""
    main = part[part["main"].astype(bool) & (part["status"] == "ok")]
    present = list(dict.fromkeys(zip(main["metric"], main["column"])))
    truth = [(m, c) for q in spec.questions.values() for (m, c) in present if (metric_name(m), c) == q]
    if track == "detection":
        chosen = [(m, c) for (m, c) in present if c in DETECTION_COLUMNS]
        return chosen[:MAX_COLUMNS]
    eligible: list[tuple[str, str]] = []
    if spec.eligibility is not None and len(spec.eligibility):
        e = spec.eligibility[(spec.eligibility["track"] == track) & spec.eligibility["eligible"].astype(bool)]
        eligible = [(m, c) for m, c in zip(e["metric"], e["column"]) if (m, c) in present and (m, c) not in truth]
    return (truth + eligible)[:MAX_COLUMNS]


def headline_boards(part: pd.DataFrame, track: str, spec: HeadlineSpec, seed: int = 0):
    """(competitor board, ceiling board or None, dropped labels, columns) of one track's part."""
    columns = headline_columns(part, track, spec)
    if not columns:
        return None, None, [], columns
    pairs = pd.Series(list(zip(part["metric"], part["column"])), index=part.index)
    own_ci = {(m, f"{c}_{end}") for m, c in columns for end in ("ci_low", "ci_high")}  # a metric's own interval
    rows = part[(pairs.isin(columns) & part["main"].astype(bool)) | pairs.isin(own_ci)]
    scored = rows[(rows["status"] == "ok") & rows["value"].notna()]
    labels = list(dict.fromkeys(rows["label"]))
    dropped = [lb for lb in labels if lb not in set(scored["label"])]
    is_ceiling = rows["label"].map(spec.role) == "ceiling"
    order = {r: i for i, r in enumerate(ROW_ORDER)}
    ranked = sorted((lb for lb in labels if lb not in dropped), key=lambda lb: order.get(spec.role(lb), 0))
    main = rows[~is_ceiling & ~rows["label"].isin(dropped)]
    is_ceiling = is_ceiling.reindex(rows.index)
    board = leaderboard(main, track, seed=seed) if len(main) else None
    if board is not None:
        board = board.reindex([lb for lb in ranked if lb in board.index])
    ceil_rows = rows[is_ceiling & ~rows["label"].isin(dropped)]
    ceilings = leaderboard(ceil_rows, track, seed=seed) if len(ceil_rows) else None
    return board, ceilings, dropped, columns


@dataclass(frozen=True)
class HeadlineRow:
    """One row of a headline table: the method's label, its display name and role, and per
    column the cell text ("mean [CI]"), the mean (NaN: no value) and its mark ("best", "tied", "")."""

    label: str
    display: str
    role: str
    cells: tuple[tuple[str, float, str], ...]


@dataclass(frozen=True)
class HeadlineTable:
    """A track's headline table as data (:func:`render_headline` prints it; the HTML report
    shows it): columns as (metric label, column) keys with their titles and arrows."""

    track: str
    keys: tuple[tuple[str, str], ...]
    heads: tuple[str, ...]
    rows: tuple[HeadlineRow, ...]
    caption: str
    note: str


def headline_table(part: pd.DataFrame, track: str, spec: HeadlineSpec, seed: int = 0) -> HeadlineTable | None:
    """The headline table of one track; None if no headline column has a value."""
    board, ceilings, dropped, columns = headline_boards(part, track, spec, seed)
    if board is None:
        return None
    keys = [k for k in columns if (k[0], k[1], "mean") in board.columns]
    arrow = {True: "↑", False: "↓", None: ""}
    dirs = board.attrs["higher_is_better"]
    heads = tuple(f"{spec.title(m, c)} {arrow[dirs.get((m, c))]}".strip() for m, c in keys)

    def cells(b: pd.DataFrame, label: str, marked: bool) -> tuple[tuple[str, float, str], ...]:
        out = []
        for k in keys:
            if (k[0], k[1], "mean") not in b.columns:
                out.append((DASH, math.nan, ""))
                continue
            mark = b.attrs.get("marks", {}).get(k, {}).get(label) if marked else None
            mean = float(b.loc[label, (k[0], k[1], "mean")]) if int(b.loc[label, (k[0], k[1], "n")]) else math.nan
            out.append((_cell_text(b, label, *k), mean, mark or ""))
        return tuple(out)

    rows = [HeadlineRow(lb, spec.display(lb), spec.role(lb), cells(board, lb, True)) for lb in board.index]
    if ceilings is not None:
        rows += [HeadlineRow(lb, spec.display(lb), "ceiling", cells(ceilings, lb, False)) for lb in ceilings.index]
    note = f"Not shown (no value in any headline column): {', '.join(dropped)}." if dropped else ""
    return HeadlineTable(track, tuple(keys), heads, tuple(rows), _caption(board, track), note)


def render_headline(part: pd.DataFrame, track: str, spec: HeadlineSpec, fmt: str = "markdown",
                    seed: int = 0) -> str:
    """The headline table of one track as Markdown or LaTeX (booktabs); "" if nothing applies."""
    table = headline_table(part, track, spec, seed)
    if table is None:
        return ""
    wrap = {"best": "**{}**", "tied": "<u>{}</u>", "": "{}"}
    body = [(row.display, [wrap[mark].format(text) for text, _, mark in row.cells]) for row in table.rows]
    if fmt == "latex":
        return _latex(table.caption, list(table.heads), body, table.note, track)
    lines = [f"**{table.caption}**", "", "| Method | " + " | ".join(table.heads) + " |",
             "|:--" + "|--:" * len(table.heads) + "|"]
    lines += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in body]
    return "\n".join(lines + ([""] + [table.note] if table.note else []) + [""])


def _caption(board: pd.DataFrame, track: str) -> str:
    """At most 300 characters: track, targets, clusters, interval and test."""
    a = board.attrs
    n, g = a["n_targets"], a.get("clusters", 0)
    units = f"{n} targets from {g} models" if g else (f"{n} targets" if n > 1 else "all pairs pooled")
    test = sign_flip_kind(g or n, g > 0) if (g or n) > 1 else "no test: one pooled target"
    text = (f"Track {track}: {units}. Mean [95% CI{', models resampled' if g else ''}]. Bold: better than every "
            f"other row, Holm-corrected sign-flip test ({test}, alpha {ALPHA:g}); underlined: tied leaders.")
    return text if len(text) <= 300 else text[:297] + "..."


def _latex(caption: str, heads: list[str], body: list[tuple[str, list[str]]], note: str, track: str) -> str:
    def cell(text: str) -> str:
        if text.startswith("**"):
            return r"\textbf{" + _tex(text.strip("*")) + "}"
        if text.startswith("<u>"):
            return r"\underline{" + _tex(text[3:-4]) + "}"
        return _tex(text)

    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\caption{" + _tex(caption) + "}",
             r"\label{tab:headline-" + "".join(ch if ch.isalnum() else "-" for ch in track) + "}",
             r"\begin{tabular}{l" + "r" * len(heads) + "}", r"\toprule",
             "Method & " + " & ".join(_tex(h) for h in heads) + r" \\", r"\midrule"]
    lines += [_tex(name) + " & " + " & ".join(cell(c) for c in cells) + r" \\" for name, cells in body]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if note:
        lines.append(r"\par\smallskip\footnotesize " + _tex(note))
    return "\n".join(lines + [r"\end{table}", ""])


def verdict(part: pd.DataFrame, track: str, spec: HeadlineSpec, seed: int = 0) -> str:
    """A paragraph of the track's verdicts, generated from its headline columns."""
    board, ceilings, _dropped, columns = headline_boards(part, track, spec, seed)
    if board is None:
        return (f"**{track}**: no column passes the headline rule here (no planted truth validates it, or a "
                "no-op split does as well; see headline_eligibility.csv): the appendix tables are descriptive only."
                if len(part[part["main"].astype(bool) & (part["status"] == "ok")]) else
                f"**{track}**: no method has a value on this track; nothing to conclude.")
    n, g = board.attrs["n_targets"], board.attrs.get("clusters", 0)
    keys = [k for k in columns if (k[0], k[1], "mean") in board.columns]
    rows = part[part["main"].astype(bool) & ~part["label"].map(spec.role).eq("ceiling")]
    cmp = paired_comparisons(target_values(rows), seed=seed)
    sentences = [f"**{track}** (" + (f"{n} targets" if n > 1 else "all pairs pooled as one target")
                 + (f" from {g} models" if g else "") + ")."]
    sentences.append(_power(cmp, g or n, g > 0))
    for key in keys:
        sentences.append(_column_verdict(board, ceilings, cmp, key, spec))
    return " ".join(s for s in sentences if s)


def _power(cmp: pd.DataFrame, units: int, clustered: bool) -> str:
    """A warning when no comparison can reach significance: the smallest attainable sign-flip
    p (2 / 2^units) times the Holm factor of the first step (the column's comparisons) >= alpha."""
    if units < 2 or cmp.empty:
        return "One pooled target: the cells are descriptive, no test applies." if units < 2 else ""
    per_column = int(cmp.groupby(["metric", "column"]).size().max())
    smallest = 2.0 / 2 ** min(units, 60)
    if smallest * per_column < ALPHA:
        return ""
    what = f"{units} models (clusters)" if clustered else f"{units} targets"
    return (f"With {what} no difference can reach significance (smallest attainable p {smallest:.3g}, times "
            f"{per_column} comparisons under Holm): the verdicts below are descriptive; more "
            + ("model seeds" if clustered else "targets") + " are needed for a test.")


def _mean(board: pd.DataFrame | None, label: str, key: tuple[str, str]) -> float:
    if board is None or label not in board.index or (key[0], key[1], "mean") not in board.columns:
        return math.nan
    return float(board.loc[label, (key[0], key[1], "mean")])


def _column_verdict(board, ceilings, cmp: pd.DataFrame, key: tuple[str, str], spec: HeadlineSpec) -> str:
    higher = board.attrs["higher_is_better"][key]
    if higher is None:
        return ""
    title = spec.title(*key)
    means = {lb: _mean(board, lb, key) for lb in board.index}
    means = {lb: v for lb, v in means.items() if math.isfinite(v)}
    better = (lambda a, b: a > b) if higher else (lambda a, b: a < b)
    competitors = sorted((lb for lb in means if spec.role(lb) in COMPETITORS), key=lambda lb: means[lb],
                         reverse=bool(higher))
    if not competitors:
        return f"{title}: no method has a value."
    lead = competitors[0]
    out = [f"{title}: {lead} leads with {fmt_number(means[lead])}"]
    if len(competitors) > 1:
        out.append(_pair(cmp, key, lead, competitors[1], "the runner-up", bool(higher)))
    floors = [lb for lb in means if spec.role(lb) == "label_floor"]
    for floor in floors:
        if not better(means[lead], means[floor]):
            out.append(f"FINDING: no method beats the label floor {floor} ({fmt_number(means[floor])})")
        else:
            out.append(_pair(cmp, key, lead, floor, "the label floor", bool(higher)))
    no_ops = [lb for lb in means if spec.role(lb) == "no_op" and not better(means[lead], means[lb])]
    if no_ops:
        out.append(f"the no-op split {no_ops[0]} does as well ({fmt_number(means[no_ops[0]])}): this column "
                   "does not separate here")
    if ceilings is not None:
        ceils = [(lb, _mean(ceilings, lb, key)) for lb in ceilings.index]
        ceils = [(lb, v) for lb, v in ceils if math.isfinite(v)]
        if ceils:
            out.append("ceilings " + ", ".join(f"{lb} {fmt_number(v)}" for lb, v in ceils))
    return "; ".join(out) + "."


def _pair(cmp: pd.DataFrame, key: tuple[str, str], a: str, b: str, what: str, higher: bool = True) -> str:
    """'over <what> b by d [lo, hi], p(Holm) = x (holds / does not hold)', with d how much
    better a is than b in the column's direction (positive = better also where lower is better)."""
    hit = cmp[(cmp["metric"] == key[0]) & (cmp["column"] == key[1])
              & (((cmp["method_a"] == a) & (cmp["method_b"] == b)) | ((cmp["method_a"] == b) & (cmp["method_b"] == a)))]
    if hit.empty or not math.isfinite(hit["p_holm"].iloc[0]):
        return f"over {what} {b}: untestable"
    r = hit.iloc[0]
    sign = (1.0 if r["method_a"] == a else -1.0) * (1.0 if higher else -1.0)
    d, lo, hi = sign * r["diff"], *sorted((sign * r["ci_low"], sign * r["ci_high"]))
    holds = "holds" if r["significant"] and r["better"] == a else "does not hold"
    return (f"over {what} {b} by {fmt_number(d)} [{fmt_number(lo)}, {fmt_number(hi)}], "
            f"p(Holm) = {r['p_holm']:.3g} on {int(r['n_common'])} targets ({holds})")


def headline_sections(df: pd.DataFrame, spec: HeadlineSpec, seed: int = 0) -> tuple[str, str]:
    """(Markdown, LaTeX) of the verdicts and headline tables of every track of ``df`` (normalised
    results); they open ``leaderboard.md`` / ``leaderboard.tex``, the appendix tables follow."""
    tracks = [t for t in dict.fromkeys(df["track"]) if df[(df["track"] == t)]["main"].astype(bool).any()]
    verdicts = [verdict(df[df["track"] == t], t, spec, seed) for t in tracks]
    md = ["## Verdicts", "", *[v + "\n" for v in verdicts], "## Headline tables", ""]
    tex = []
    for t in tracks:
        part = df[df["track"] == t]
        table = render_headline(part, t, spec, "markdown", seed)
        if table:
            md += [f"### Track: {t}", "", table]
            tex.append(render_headline(part, t, spec, "latex", seed))
    return "\n".join(md), "\n".join(tex)


def evidence(results: pd.DataFrame, seed: int = 0, evidence_run: str | Path | None = None):
    """(spec with the eligibility table, meta-evaluation table or None, calibration or None) of
    a results frame: the meta-evaluation against every truth question, then the headline rule.

    A run without planted truth (a real-model run) may borrow rule (b)'s evidence from
    ``evidence_run``, a run folder holding ``meta_evaluation.csv`` (e.g. the committed
    synthetic run ``results/``); the evidence column then names that folder."""
    from benchmark.evaluation.eligibility import headline_eligibility
    from benchmark.evaluation.meta_evaluation import has_truth, meta_evaluation
    from benchmark.reporting.leaderboards import normalise

    df = normalise(results)
    meta = calib = None
    borrowed = None
    if has_truth(df):
        meta, calib = meta_evaluation(df, seed=seed)
    elif evidence_run is not None:
        path = Path(evidence_run) / "meta_evaluation.csv"
        if not path.is_file():
            raise MissingFileError(f"evidence run {evidence_run}: no meta_evaluation.csv there (set `evidence` to "
                                   "a run folder with a planted track, e.g. results, or leave it unset)")
        borrowed = pd.read_csv(path)
    spec = spec_from_registry()
    eligibility = headline_eligibility(target_values(df), spec.roles, set(spec.questions.values()),
                                       meta if borrowed is None else borrowed)
    if borrowed is not None:
        eligibility["evidence"] = eligibility["evidence"].str.replace(
            "Spearman CI low", f"Spearman CI low (from {evidence_run})", regex=False)
    return HeadlineSpec(spec.roles, spec.citations, spec.titles, spec.questions, eligibility), meta, calib
