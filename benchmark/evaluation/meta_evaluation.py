"""Meta-evaluation: how far can a label-free metric be trusted? (DESIGN.md, "Meta-evaluation").

On the planted track the truth is known: ``planted_recovery/recovery`` (the cross-fitted gain
of the virtual neurons over the channel in explaining the planted parts; oracle 1, any copy
of the channel 0). For every label-free metric column (one that needs no planted truth:
embedding separation on crops and on feature visualisations, the activation-ratio distance,
the residual) this module measures its rank agreement with the truth across all
(method, target) rows of the planted track:

The truth and the candidates are declared by the metrics themselves (``truth_column`` and
``label_free`` class attributes), so a new label-free metric is ranked without an edit here.

* Spearman's rho and Kendall's tau-b (``scipy.stats``), signed by the metric's direction so
  that +1 always means "ranks splits as the truth does" (a lower-is-better metric is negated);
* a 95% percentile bootstrap CI (``bootstrap`` resamples of the rows, seeded).

The table also carries the calibration of the truth itself (mean recovery of ``oracle``,
``identity``, ``duplicate``, ``random_split`` where present), so a reader can see that the
yardstick is anchored. Written to ``meta_evaluation.csv`` / ``.md`` and
``meta_calibration.csv`` in the run folder (atomic writes).
Not covered: methods' polysemanticity scores (detection track) are per (channel, class pair),
not per split, so they have no (method, target) row to rank against the planted truth.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from benchmark.storage.cache import atomic_write, atomic_write_text

TRUTH = ("planted_recovery", "recovery")  # the default; the registry's ``truth_column`` metric wins
COLUMNS = ["metric", "column", "direction", "n", "spearman", "spearman_lo", "spearman_hi",
           "kendall", "kendall_lo", "kendall_hi", "truth"]
CALIBRATION_METHODS = ("oracle", "identity", "duplicate", "random_split")


def declared() -> tuple[tuple[str, str], tuple[str, ...]]:
    """(truth metric, column) and the label-free metric names, as the metrics declare them
    (``truth_column`` / ``label_free`` class attributes in the METRICS registry)."""
    from benchmark.core.registry import METRICS

    classes = {name: METRICS.get(name) for name in METRICS.names()}
    truths = [(n, c.truth_column) for n, c in classes.items() if c.truth_column]
    label_free = tuple(n for n, c in classes.items() if c.label_free)
    return (truths[0] if truths else TRUTH), label_free


def truth_questions() -> dict[str, tuple[str, str]]:
    """question -> (metric, column) of every truth question the metrics declare (``questions``;
    e.g. assignment -> planted_recovery/ari); the ``truth_column`` alone where none is declared."""
    from benchmark.core.registry import METRICS

    out: dict[str, tuple[str, str]] = {}
    for name in METRICS.names():
        cls = METRICS.get(name)
        for question, column in cls.questions.items():
            out.setdefault(question, (name, column))
    if not out:
        out["truth"] = declared()[0]
    return out


def _signed(frame: pd.DataFrame) -> float | None:
    """+1 higher is better, -1 lower is better, None: the column has no direction."""
    return {"true": 1.0, "false": -1.0}.get(str(frame["higher_is_better"].iloc[0]).strip().lower())


def _spearman_rows(m_bn: np.ndarray, t_bn: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair: Pearson of average ranks (as scipy.stats.spearmanr)."""
    rm, rt = stats.rankdata(m_bn, axis=1), stats.rankdata(t_bn, axis=1)
    rm, rt = rm - rm.mean(1, keepdims=True), rt - rt.mean(1, keepdims=True)
    denom = np.sqrt((rm ** 2).sum(1) * (rt ** 2).sum(1))
    return np.divide((rm * rt).sum(1), denom, out=np.full(len(denom), np.nan), where=denom > 0)


def _kendall_rows(m_bn: np.ndarray, t_bn: np.ndarray, chunk: int = 64) -> np.ndarray:
    """Kendall's tau-b of each row pair: sum sign(dm) sign(dt) / sqrt(sum dm^2 sum dt^2) over
    pairs i < j (the tau-b of scipy.stats.kendalltau, ties counted as it does). Signs are
    int8 and rows go in chunks: a 1000-resample bootstrap of 444 rows stays in cache."""
    i, j = np.triu_indices(m_bn.shape[1], k=1)
    out = np.full(m_bn.shape[0], np.nan)
    for s in range(0, m_bn.shape[0], chunk):
        mb, tb = m_bn[s:s + chunk], t_bn[s:s + chunk]
        sm = np.sign(mb[:, i] - mb[:, j]).astype(np.int8)
        st = np.sign(tb[:, i] - tb[:, j]).astype(np.int8)
        num = (sm * st).sum(1, dtype=np.int64).astype(float)
        den = np.sqrt(np.abs(sm).sum(1, dtype=np.int64).astype(float) * np.abs(st).sum(1, dtype=np.int64))
        out[s:s + chunk] = np.divide(num, den, out=np.full(len(den), np.nan), where=den > 0)
    return out


def _kendall_resampled(metric: np.ndarray, truth: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of every bootstrap resample ``metric[idx[b]]`` vs ``truth[idx[b]]``,
    equal to :func:`_kendall_rows` on the resampled rows, without forming them: a resample
    that draws item a c_a times has c_a c_b pairs (a, b), so each sum over its pairs i < j is
    the quadratic form c^T P c / 2 of the pair matrix P of the original items (its diagonal is
    0: a pair of copies is tied on both sides). Integer sums, so exact in float64."""
    n = metric.size
    counts = np.zeros((idx.shape[0], n))
    np.add.at(counts, (np.repeat(np.arange(idx.shape[0]), idx.shape[1]), idx.ravel()), 1.0)
    sm = np.sign(metric[:, None] - metric[None, :])
    st = np.sign(truth[:, None] - truth[None, :])

    def pairs(matrix: np.ndarray) -> np.ndarray:
        return 0.5 * np.einsum("bi,bi->b", counts @ matrix, counts)

    num, den = pairs(sm * st), np.sqrt(pairs(np.abs(sm)) * pairs(np.abs(st)))
    return np.divide(num, den, out=np.full(len(den), np.nan), where=den > 0)


def rank_agreement(metric: np.ndarray, truth: np.ndarray, bootstrap: int = 1000, seed: int = 0) -> dict[str, float]:
    """Spearman and Kendall (tau-b) of ``metric`` vs ``truth`` with 95% percentile bootstrap
    CIs (resamples where either side is constant are skipped)."""
    metric, truth = np.asarray(metric, float), np.asarray(truth, float)
    if metric.shape != truth.shape or metric.ndim != 1:
        raise ValueError(f"metric and truth must be equal-length vectors, got {metric.shape} and {truth.shape}")
    out = {"n": float(metric.size)}
    enough = metric.size >= 3
    out["spearman"] = float(_spearman_rows(metric[None], truth[None])[0]) if enough else np.nan
    out["kendall"] = float(_kendall_rows(metric[None], truth[None])[0]) if enough else np.nan
    idx = np.random.default_rng(seed).integers(0, metric.size, (bootstrap if enough else 0, metric.size))
    resampled = {"spearman": lambda: _spearman_rows(metric[idx], truth[idx]),
                 "kendall": lambda: _kendall_resampled(metric, truth, idx)}
    for name, fn in resampled.items():
        values = fn() if idx.size else np.array([])
        values = values[np.isfinite(values)]
        lo, hi = np.percentile(values, [2.5, 97.5]) if values.size else (np.nan, np.nan)
        out[f"{name}_lo"], out[f"{name}_hi"] = float(lo), float(hi)
    return out


def meta_evaluation(results: pd.DataFrame, bootstrap: int = 1000, seed: int = 0,
                    label_free: tuple[str, ...] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(agreement table with :data:`COLUMNS`, one row per label-free column and truth question,
    calibration table) from a tidy results frame."""
    truth_key, registered = declared()
    label_free = registered if label_free is None else label_free
    ok = results[(results["track"] == "planted") & (results["status"] == "ok") & results["main"].astype(bool)]
    # a target is one channel of one model: planted targets span layers and model seeds
    keys = [k for k in ("method", "method_params", "model", "model_seed", "layer", "target") if k in ok.columns]
    truth = ok[(ok["metric"] == truth_key[0]) & (ok["column"] == truth_key[1])].set_index(keys)["value"]
    rows = []
    for question, (t_metric, t_column) in truth_questions().items():
        answer = ok[(ok["metric"] == t_metric) & (ok["column"] == t_column)].set_index(keys)["value"]
        for (metric, column), frame in ok.groupby(["metric", "column"], sort=True):
            if not any(str(metric) == n or str(metric).startswith(n + "[") for n in label_free):
                continue
            sign = _signed(frame)
            if sign is None:  # e.g. a raw own ratio: its ideal is 1, not an end of the scale
                continue
            joined = frame.set_index(keys)["value"].to_frame("metric").join(answer.rename("truth"), how="inner").dropna()
            agreement = rank_agreement(sign * joined["metric"].to_numpy(), joined["truth"].to_numpy(), bootstrap, seed)
            rows.append({"metric": metric, "column": column, "direction": "higher" if sign > 0 else "lower",
                         "truth": f"{question} ({t_metric}/{t_column})", **agreement})
    table = pd.DataFrame(rows, columns=COLUMNS)
    calib = (truth.reset_index().groupby("method")["value"].agg(["mean", "min", "max", "count"])
             .reindex([m for m in CALIBRATION_METHODS if m in set(truth.reset_index()["method"])]).reset_index())
    return table, calib


def to_markdown(table: pd.DataFrame, calib: pd.DataFrame, eligibility: pd.DataFrame | None = None) -> str:
    """A small Markdown rendering (rho/tau with their 95% CIs; the headline eligibility)."""
    lines = ["Rank agreement with the planted truth of each question across (method, target) of the "
             "planted track; signed so that +1 = same order as the truth; 95% bootstrap CIs.", "",
             "| metric | column | truth | n | Spearman [95% CI] | Kendall [95% CI] |", "|---|---|---|---|---|---|"]
    def cell(v: float, lo: float, hi: float) -> str:  # "—": fewer than 3 rows or a constant side
        return "—" if not np.isfinite(v) else f"{v:.2f} [{lo:.2f}, {hi:.2f}]"

    for r in table.itertuples():
        lines.append(f"| {r.metric} | {r.column} | {r.truth} | {int(r.n)} | "
                     f"{cell(r.spearman, r.spearman_lo, r.spearman_hi)} | {cell(r.kendall, r.kendall_lo, r.kendall_hi)} |")
    if eligibility is not None and len(eligibility):
        lines += ["", "Headline eligibility (benchmark.evaluation.eligibility): (a) no no-op split reaches the "
                  "median method; (b) Spearman CI above 0 against every truth question.", "",
                  "| track | metric | column | (a) | (b) | headline | evidence |", "|---|---|---|---|---|---|---|"]
        yes = {True: "yes", False: "**no**"}
        for r in eligibility.itertuples():
            lines.append(f"| {r.track} | {r.metric} | {r.column} | {yes[bool(r.rule_a)]} | {yes[bool(r.rule_b)]} | "
                         f"{'yes' if r.eligible else 'appendix'} | {r.evidence} |")
    lines += ["", "Calibration of the truth (mean recovery per trivial split; oracle should be 1, copies 0):", ""]
    lines += [f"- {r.method}: {r.mean:.3f} (min {r.min:.3f}, max {r.max:.3f}, {int(r.count)} targets)"
              for r in calib.itertuples()]
    return "\n".join(lines) + "\n"


def has_truth(results: pd.DataFrame) -> bool:
    """Whether the results hold planted-truth rows to meta-evaluate against."""
    return bool(((results["track"] == "planted") & (results["metric"] == declared()[0][0])).any())


def write_meta_evaluation(results: pd.DataFrame, out_dir: str | Path, bootstrap: int = 1000, seed: int = 0,
                          table: pd.DataFrame | None = None, calib: pd.DataFrame | None = None,
                          eligibility: pd.DataFrame | None = None) -> Path | None:
    """Write the tables into ``out_dir`` (computing them unless given); None (nothing written)
    without planted truth rows."""
    if not has_truth(results):
        return None
    if table is None or calib is None:
        table, calib = meta_evaluation(results, bootstrap, seed)
    out = Path(out_dir)
    atomic_write(out / "meta_evaluation.csv", lambda p: table.to_csv(p, index=False))
    atomic_write(out / "meta_calibration.csv", lambda p: calib.to_csv(p, index=False))
    if eligibility is not None:
        atomic_write(out / "headline_eligibility.csv", lambda p: eligibility.to_csv(p, index=False))
    atomic_write_text(out / "meta_evaluation.md", to_markdown(table, calib, eligibility))
    return out / "meta_evaluation.csv"
