"""Rendering of leaderboards (boards from :func:`benchmark.reporting.leaderboards.leaderboard`) as
Markdown, LaTeX (booktabs) and CSV, and writing all three atomically.

Numbers are shown as ``0.812 [0.790, 0.835]`` (a bootstrap interval over targets; or
``± s.e.m.``), ``(a/b)`` where a method has a value on a of the b targets, ↑/↓ from
``higher_is_better`` in the headers, "—" where a metric does not apply, and a notes line
naming datasets, models, layers, metric labels (which carry the embedder), the interval
and the test. Bold and underline follow the board's ``marks``
(:func:`benchmark.evaluation.statistics.leaders`): bold = a method scored on every target and
significantly better than every other one (Holm-corrected paired sign-flip test);
underline = leaders that no test separates. With several seeds, a second table gives the
seed spread.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from benchmark.core.errors import InputError
from benchmark.reporting.leaderboards import DASH, FORMATS, leaderboard, normalise


def fmt_number(x: float) -> str:
    """Three decimals (``0.812``); three significant digits in scientific notation for
    magnitudes below 1e-3 or from 1e4 on (``4.2e-05``)."""
    if not math.isfinite(x):
        return str(x)
    x = float(x) + 0.0  # no "-0.000"
    return f"{x:.3f}" if x == 0 or 1e-3 <= abs(x) < 1e4 else f"{x:.3g}"


def _cell_text(board: pd.DataFrame, label: str, metric: str, column: str) -> str:
    get = lambda s: board.loc[label, (metric, column, s)]  # noqa: E731
    n, total = int(get("n")), int(get("n_total"))
    if n == 0:
        return "error" if get("n_error") > 0 else DASH
    text = fmt_number(get("mean"))
    if board.attrs["uncertainty"] == "sem":
        if math.isfinite(get("sem")):
            text += f" ± {fmt_number(get('sem'))}"
    elif math.isfinite(get("ci_low")):
        text += f" [{fmt_number(get('ci_low'))}, {fmt_number(get('ci_high'))}]"
    return text + (f" ({n}/{total})" if n < total else "")


def _keys(board: pd.DataFrame) -> list[tuple[str, str]]:
    return list(dict.fromkeys((m, c) for m, c, _ in board.columns))


def _notes(board: pd.DataFrame, latex: bool) -> str:
    """The line naming datasets, models, layers and metric labels, and the cell legend."""
    from benchmark.evaluation.statistics import ALPHA

    a = board.attrs
    head = (f"Datasets: {'; '.join(a['datasets'])}. Models: {'; '.join(a['models'])}. "
            f"Layers: {'; '.join(a['layers'])}. Metrics: {'; '.join(a['metrics'])}.")
    pm, pct, dash, arrows, alpha = (("$\\pm$", "\\%", "---", "$\\uparrow$/$\\downarrow$", "$\\alpha$")
                                    if latex else ("±", "%", DASH, "↑/↓", "α"))
    clusters = a.get("clusters", 0)
    over = (f"two-stage bootstrap over {clusters} models (clusters), then targets within them"
            if clusters else "percentile-bootstrap interval over targets")
    spread = (f"{pm} standard error" if a["uncertainty"] == "sem"
              else f"[95{pct} {over}, {a.get('n_boot', 2000)} resamples]")
    if a.get("own_interval"):
        spread = f"[the metric's own 95{pct} interval (detection: bootstrap over pairs)]"
    counts = board.loc[:, [k for k in board.columns if k[2] in ("n", "n_total")]].to_numpy()
    n, total = counts[:, 0::2], counts[:, 1::2]
    partial = " (a/b): a value on a of the b targets scored, else all;" if ((n > 0) & (n < total)).any() else ""
    kind = sign_flip_kind(clusters or a["n_targets"], clusters > 0)
    kind = _tex(kind) if latex else kind
    test = (f"bold: the best mean among methods with a value on every target, better than every other "
            f"method by a two-sided sign-flip test of paired differences on common targets "
            f"({kind}), "
            f"Holm-corrected over the column's pairwise comparisons ({alpha} = {ALPHA:g}); underlined: "
            f"leaders that test cannot separate (partial coverage is never bold)")
    return ((_tex(head) if latex else head)
            + f" Cells: mean {spread}, {a['n_targets']} targets, seeds averaged per target first;"
            f"{partial} {dash} not applicable; {test}; {arrows}: higher/lower is better.")


def sign_flip_kind(n: int, clustered: bool) -> str:
    """How the sign-flip test of n units (targets, or clusters) was computed, for captions."""
    from benchmark.evaluation.statistics import EXACT_MAX_N, MC_RESAMPLES

    unit = "signs flipped per model" if clustered else "signs flipped per target"
    if n <= EXACT_MAX_N:
        return f"{unit}, exact: all 2^{n} patterns"
    return f"{unit}, Monte Carlo, {MC_RESAMPLES:,} draws (Monte Carlo s.e. of p <= {0.5 / MC_RESAMPLES ** 0.5:.4f})"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
        "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}", "±": r"$\pm$", DASH: "---", "↑": r"$\uparrow$",
        "↓": r"$\downarrow$"}


def _tex(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in text)


def _markdown(board: pd.DataFrame, caption: str) -> str:
    arrow = {True: " ↑", False: " ↓", None: ""}
    dirs = board.attrs["higher_is_better"]
    keys = _keys(board)
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = [f"**{esc(caption)}**", "",
             "| method | " + " | ".join(esc(f"{m} / {c}") + arrow[dirs[(m, c)]] for m, c in keys) + " |",
             "|:--" + "|--:" * len(keys) + "|"]
    wrap = {"best": "**{}**", "tied": "<u>{}</u>"}
    for label in board.index:
        cells = [_cell_text(board, label, m, c) for m, c in keys]
        cells = [_mark(board, label, k, t, wrap) for t, k in zip(cells, keys)]
        lines.append(f"| {esc(label)} | " + " | ".join(cells) + " |")
    return "\n".join(lines + ["", _notes(board, latex=False), ""] + _seed_table(board, esc))


def _mark(board: pd.DataFrame, label: str, key: tuple[str, str], text: str, wrap: dict) -> str:
    mark = board.attrs.get("marks", {}).get(key, {}).get(label)
    return wrap[mark].format(text) if mark else text


def _seed_table(board: pd.DataFrame, esc) -> list[str]:
    """Markdown lines of the seed spread (only when some cell averages several seeds)."""
    keys = _keys(board)
    if not any((board[(m, c, "n_seeds")] > 1).any() for m, c in keys):
        return []
    lines = ["Seed spread: standard deviation over seeds of the mean over targets (number of seeds).", "",
             "| method | " + " | ".join(esc(f"{m} / {c}") for m, c in keys) + " |",
             "|:--" + "|--:" * len(keys) + "|"]
    for label in board.index:
        cells = []
        for m, c in keys:
            k, sd = int(board.loc[label, (m, c, "n_seeds")]), board.loc[label, (m, c, "seed_sd")]
            cells.append(DASH if k == 0 else (f"{fmt_number(sd)} ({k})" if math.isfinite(sd) else f"— ({k})"))
        lines.append(f"| {esc(label)} | " + " | ".join(cells) + " |")
    return lines + [""]


def _latex(board: pd.DataFrame, caption: str, tex_label: str) -> str:
    arrow = {True: r" $\uparrow$", False: r" $\downarrow$", None: ""}
    dirs = board.attrs["higher_is_better"]
    keys = _keys(board)
    groups: dict[str, list[str]] = {}
    for m, c in keys:
        groups.setdefault(m, []).append(c)
    top, rules, start = [], [], 2
    for m, cols in groups.items():
        top.append(f"\\multicolumn{{{len(cols)}}}{{c}}{{{_tex(m)}}}")
        rules.append(f"\\cmidrule(lr){{{start}-{start + len(cols) - 1}}}")
        start += len(cols)
    wrap = {"best": "\\textbf{{{}}}", "tied": "\\underline{{{}}}"}
    body = []
    for label in board.index:
        cells = [_tex(_cell_text(board, label, m, c)) for m, c in keys]
        cells = [_mark(board, label, k, t, wrap) for t, k in zip(cells, keys)]
        body.append(_tex(label) + " & " + " & ".join(cells) + r" \\")
    wide = len(keys) > 6  # an appendix table: scaled to the text width
    return "\n".join([
        r"% requires \usepackage{booktabs,graphicx}", r"\begin{table}[htbp]", r"\centering",
        f"\\caption{{{_tex(caption)} {_notes(board, latex=True)}}}",
        f"\\label{{{tex_label}}}", *([r"\resizebox{\textwidth}{!}{%"] if wide else []),
        f"\\begin{{tabular}}{{l{'c' * len(keys)}}}", r"\toprule",
        " & " + " & ".join(top) + r" \\", " ".join(rules),
        "Method & " + " & ".join(_tex(c) + arrow[dirs[(m, c)]] for m, c in keys) + r" \\",
        r"\midrule", *body, r"\bottomrule", r"\end{tabular}" + ("}" if wide else ""), r"\end{table}", ""])


def long_table(board: pd.DataFrame) -> pd.DataFrame:
    """The board as plain numbers, one row per (method, metric, column)."""
    a = board.attrs
    stats = list(dict.fromkeys(s for _, _, s in board.columns))
    records = []
    for label in board.index:
        for m, c in _keys(board):
            rec = {"track": a["track"], "method": label, "metric": m, "column": c,
                   "higher_is_better": {True: "true", False: "false", None: ""}[a["higher_is_better"][(m, c)]]}
            rec.update({s: board.loc[label, (m, c, s)] for s in stats})
            n, err = rec["n"], rec["n_error"]
            rec["cell"] = "ok" if n > 0 else ("error" if err > 0 else "not_applicable")
            rec["mark"] = a.get("marks", {}).get((m, c), {}).get(label, "")
            rec.update(models="; ".join(a["models"]), datasets="; ".join(a["datasets"]),
                       layers="; ".join(a["layers"]), uncertainty=a["uncertainty"])
            records.append(rec)
    out = pd.DataFrame.from_records(records)
    for s in ("n", "n_total", "n_error"):
        out[s] = out[s].astype(int)
    return out


def render(board: pd.DataFrame, fmt: str = "markdown", caption: str | None = None,
           tex_label: str | None = None) -> str:
    """Text of a :func:`leaderboard` in ``markdown``, ``latex`` (booktabs) or ``csv``.

    Bold / underline from the board's marks (see the module docstring); arrows from
    ``higher_is_better``; the caption is followed by a note naming datasets, models,
    layers, metric labels, the interval and the test. ``tex_label`` defaults to
    ``tab:leaderboard-<track>``. CSV: :func:`long_table`.
    """
    if fmt not in FORMATS:
        raise InputError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    if "track" not in board.attrs:
        raise ValueError("render needs a board made by leaderboard() (its attrs are missing)")
    caption = caption or f"Leaderboard, track {board.attrs['track']}."
    if fmt == "csv":
        return long_table(board).to_csv(index=False, lineterminator="\n")
    shown, empty = _without_empty_rows(board)
    if empty:
        caption += f" Not applicable in any column (rows left out): {', '.join(empty)}."
    if fmt == "markdown":
        return _markdown(shown, caption)
    tag = re.sub(r"[^A-Za-z0-9]+", "-", board.attrs["track"]).strip("-")
    return _latex(shown, caption, tex_label or f"tab:leaderboard-{tag}")


def _without_empty_rows(board: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The board without the methods that have no value (and no error) in any column, and their labels."""
    n = board[[k for k in board.columns if k[2] in ("n", "n_error")]].sum(axis=1)
    empty = [str(label) for label in board.index if n[label] == 0]
    if not empty or len(empty) == len(board):
        return board, []
    shown = board.drop(index=empty)
    shown.attrs = board.attrs
    return shown, empty


def model_family(model: str) -> str:
    """The model a target belongs to, without its seed tag: the planted track names targets
    of retrained networks ``world_cnn@seed<s>``; those are targets of ONE leaderboard (the
    model seed is part of each target's identity, see benchmark.evaluation.statistics.UNIT)."""
    return model.split("@", 1)[0]


def write_leaderboards(df: pd.DataFrame, out_dir: str | Path, uncertainty: str = "bootstrap",
                       seed: int = 0, preface: tuple[str, str] | None = None) -> dict[str, Path]:
    """Write ``leaderboard.md`` (a section per track; a subsection per model family and
    dataset when a track has several), ``leaderboard.tex`` and ``leaderboard.csv`` atomically.
    ``preface`` (Markdown, LaTeX): the verdicts and headline tables
    (:func:`benchmark.reporting.headline.headline_sections`); the per-track tables then follow
    as the appendix. Returns ``{"markdown": path, "latex": path, "csv": path}``."""
    df = normalise(df)
    md, tex, frames = ["# Leaderboard", ""], [], []
    if preface is not None:
        md += [preface[0], "", "## Appendix: every column of every track", ""]
        tex.append(preface[1])
    level = "###" if preface is not None else "##"
    for track in dict.fromkeys(df["track"]):
        part = df[df["track"] == track]
        if not part["main"].astype(bool).any():
            continue
        md += [f"{level} Track: {track}", ""]
        family = part["model"].astype(str).map(model_family)  # world_cnn@seed1 -> world_cnn
        combos = list(dict.fromkeys(zip(family, part["dataset"])))
        for model, dataset in combos:
            sub = part[(family == model) & (part["dataset"] == dataset)]
            if not sub["main"].astype(bool).any():
                continue
            board = leaderboard(sub, track, uncertainty=uncertainty, seed=seed)
            tag = re.sub(r"[^A-Za-z0-9]+", "-", f"{track}-{model}-{dataset}").strip("-")
            if len(combos) > 1:
                md += [f"{level}# {model} on {dataset}", ""]
            if not board[[k for k in board.columns if k[2] in ("n", "n_error")]].to_numpy().any():
                md += ["No method has a value on this track (it has no targets, or no metric applies).", ""]
                frames.append(long_table(board))  # the csv still lists every (method, column) as not applicable
                continue
            md.append(render(board, "markdown"))
            tex.append(render(board, "latex", tex_label=f"tab:leaderboard-{tag}" if len(combos) > 1 else None))
            frames.append(long_table(board))
    if not frames:
        raise InputError("no main metric rows to put in a leaderboard")
    out = Path(out_dir)
    paths = {"markdown": out / "leaderboard.md", "latex": out / "leaderboard.tex",
             "csv": out / "leaderboard.csv"}
    from benchmark.storage.cache import atomic_write  # imported here: rendering alone needs no torch

    texts = {"markdown": "\n".join(md), "latex": "\n".join(tex),
             "csv": pd.concat(frames, ignore_index=True).to_csv(index=False, lineterminator="\n")}
    for kind, text in texts.items():
        atomic_write(paths[kind], lambda p, text=text: p.write_text(text, encoding="utf-8"))
    return paths


def latex_document(tables: str) -> str:
    """A complete LaTeX document around ``leaderboard.tex`` (for a quick PDF; a paper
    ``\\input``s the tables instead): article, T1 fonts, booktabs, graphicx, landscape."""
    return "\n".join([r"\documentclass{article}", r"\usepackage[T1]{fontenc}", r"\usepackage[utf8]{inputenc}",
                      r"\usepackage{booktabs,graphicx}", r"\usepackage[landscape,margin=1.5cm]{geometry}",
                      r"\begin{document}", tables, r"\end{document}", ""])
