"""Polysemanticity detection scored as a binary classifier (shared by the detection
metrics, which differ only in their ground truth).

Each row is a (channel, class pair) with a method's polysemanticity score s, a similarity
(low = polysemantic, as in Hesse et al. 2025's gamma rule), and a truth label (True =
polysemantic). The classifier's decision value is -s, so:

* ``auroc``: area under the ROC curve (``sklearn.metrics.roc_auc_score``; ties count 1/2);
* ``auprc``: average precision (``sklearn.metrics.average_precision_score``), whose chance
  level is the prevalence (share of positives), reported as ``prevalence``;
* ``<x>_ci_low`` / ``<x>_ci_high``: 95 % percentile bootstrap over rows (pairs resampled
  with replacement, ``N_BOOT`` seeded draws; draws holding one class only are skipped;
  computed by :func:`weighted_auroc_auprc`, equal to sklearn on every draw);
* ``precision``/``recall``/``f1`` of "polysemantic iff s < gamma", and per gamma of the
  sweep ``precision@g``, ``recall@g``, ``f1@g``, ``predicted@g``;
* the trivial detectors on the same rows, by the same code: ``always_*`` (every pair
  called polysemantic: a constant score 0) and ``random_*`` (scores uniform on [0, 1]
  from ``numpy.random.default_rng(seed)``, averaged over ``RANDOM_DRAWS`` draws; its
  interval is the spread over draws, see :func:`random_detector`).

Undefined numbers are left out, never reported as 0: precision and F1 when no pair is
predicted at a gamma, AUROC when every row is positive. Without any positive row recall
is undefined at every gamma and the metric does not apply.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, cast

import numpy as np
from numpy.typing import ArrayLike

from benchmark.core.types import Column, NotApplicable

# The columns of every detection metric (a polysemanticity score scored as a classifier).
DETECTION_COLUMNS: tuple[Column, ...] = (
    Column("auroc", True, (0.0, 1.0)),
    Column("auprc", True, (0.0, 1.0)),
    Column("precision", True, (0.0, 1.0)),
    Column("recall", True, (0.0, 1.0)),
    Column("f1", True, (0.0, 1.0)),
)

N_BOOT = 1000
LEVEL = 0.95
RANDOM_DRAWS = 200


@dataclass(frozen=True)
class DetectionCounts:
    """Confusion counts at one gamma; precision/recall/F1 are None where undefined."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def f1(self) -> float | None:
        p, r = self.precision, self.recall
        if p is None or r is None:
            return None
        return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def _vectors(truth: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(truth)
    s = np.asarray(scores, dtype=float)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"truth and scores must be 1-D of equal length, got {y.shape} and {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite (no NaN/inf)")
    return y.astype(bool), s


def counts(truth: ArrayLike, scores: ArrayLike, gamma: float) -> DetectionCounts:
    """Confusion counts of "polysemantic iff score < gamma" against ``truth``."""
    y, s = _vectors(truth, scores)
    pred = s < gamma
    return DetectionCounts(tp=int((y & pred).sum()), fp=int((~y & pred).sum()),
                           fn=int((y & ~pred).sum()), tn=int((~y & ~pred).sum()))


def weighted_auroc_auprc(truth: ArrayLike, decision: ArrayLike,
                         weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROC and average precision of ``decision`` (high = positive) for each row of
    ``weights`` (B, n): row b counts row i ``weights[b, i]`` times, so a bootstrap
    resample is its multiplicity vector. With unit weights both equal sklearn's
    ``roc_auc_score`` / ``average_precision_score`` (ties: 1/2 in AUROC; one step per
    distinct value in AP). Vectorised because 1000 resamples through sklearn per detector
    took seconds. NaN where a row lacks a class (AUROC) or positives (AP)."""
    y = np.asarray(truth, dtype=bool)
    d = np.asarray(decision, dtype=float)
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    pos, neg = w @ y, w @ ~y
    kernel = (d[:, None] > d[None, :]) + 0.5 * (d[:, None] == d[None, :])
    kernel = kernel * (y[:, None] & ~y[None, :])
    with np.errstate(invalid="ignore", divide="ignore"):
        auroc = np.einsum("bi,ij,bj->b", w, kernel, w) / (pos * neg)
    levels, group = np.unique(-d, return_inverse=True)  # distinct values, highest decision first
    onehot = np.zeros((len(d), len(levels)))
    onehot[np.arange(len(d)), group] = 1.0
    tp = np.cumsum((w * y) @ onehot, axis=1)
    fp = np.cumsum((w * ~y) @ onehot, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = tp / pos[:, None]
        step = np.diff(np.concatenate([np.zeros((len(w), 1)), recall], axis=1), axis=1)
        ap = (step * precision).sum(axis=1)
    ap[pos == 0] = np.nan
    auroc[(pos == 0) | (neg == 0)] = np.nan
    return auroc, ap


def ranking_scores(truth: ArrayLike, scores: ArrayLike, seed: int = 0,
                   n_boot: int = N_BOOT) -> dict[str, float]:
    """``auroc`` (when both classes occur), ``auprc`` (sklearn) and their percentile
    bootstrap intervals over rows (:func:`weighted_auroc_auprc` on the resamples)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y, s = _vectors(truth, scores)
    if not y.any():
        raise ValueError("ranking scores need at least one positive row")
    both = not y.all()
    out = {"auprc": float(average_precision_score(y, -s))}
    if both:
        out["auroc"] = float(roc_auc_score(y, -s))
    idx = np.random.default_rng(seed).integers(0, len(y), size=(n_boot, len(y)))
    multiplicity = np.zeros((n_boot, len(y)))
    np.add.at(multiplicity, (np.arange(n_boot)[:, None], idx), 1.0)
    draws = dict(zip(("auroc", "auprc"), weighted_auroc_auprc(y, -s, multiplicity)))
    for key in ("auroc", "auprc") if both else ("auprc",):
        ok = draws[key][np.isfinite(draws[key])]  # resamples holding one class only are skipped
        if len(ok) >= 2:
            lo, hi = np.quantile(ok, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
            out[f"{key}_ci_low"], out[f"{key}_ci_high"] = float(lo), float(hi)
    return out


def _rates(c: DetectionCounts, prefix: str, suffix: str = "") -> dict[str, float]:
    # recall exists: every caller has raised NotApplicable when the truth has no positive;
    # f1 exists whenever precision does
    out = {f"{prefix}recall{suffix}": cast(float, c.recall)}
    if c.precision is not None:
        out[f"{prefix}precision{suffix}"] = c.precision
        out[f"{prefix}f1{suffix}"] = cast(float, c.f1)
    return out


def classifier_report(truth: ArrayLike, scores: ArrayLike, gamma: float,
                      sweep: Sequence[float], seed: int = 0, n_boot: int = N_BOOT) -> dict[str, float]:
    """Every number of the module docstring for one detector and one truth."""
    y, s = _vectors(truth, scores)
    if len(y) == 0:
        raise NotApplicable("the detection table is empty")
    if not y.any():
        raise NotApplicable(f"no pair of the {len(y)} is polysemantic by this truth: recall is undefined")
    main = counts(y, s, gamma)
    out: dict[str, float] = {"pairs": float(len(y)), "positives": float(y.sum()), "prevalence": float(y.mean()),
                             "tp": float(main.tp), "fp": float(main.fp), "fn": float(main.fn), "tn": float(main.tn)}
    out.update(_rates(main, ""))
    out.update(ranking_scores(y, s, seed=seed, n_boot=n_boot))
    for g in sweep:
        c = counts(y, s, g)
        out[f"predicted@{g:.2f}"] = float(c.tp + c.fp)
        out.update(_rates(c, "", f"@{g:.2f}"))
    always = np.zeros(len(y))
    out.update(_rates(counts(y, always, gamma), "always_"))
    out.update({"always_" + k: v for k, v in ranking_scores(y, always, seed=seed, n_boot=n_boot).items()})
    out.update(random_detector(y, gamma, seed))
    return {k: float(v) for k, v in out.items()}


def random_detector(truth: np.ndarray, gamma: float, seed: int = 0, draws: int = RANDOM_DRAWS) -> dict[str, float]:
    """``random_*``: the mean over ``draws`` seeded draws of uniform [0, 1] scores on the
    same rows, and for AUROC/AUPRC the 2.5 / 97.5 % quantiles over the draws as
    ``_ci_low``/``_ci_high`` (the band a detector must leave to beat chance); precision and
    F1 average the draws where they are defined. One draw alone
    can look lucky (an AUROC of 0.6 on 200 pairs happens about once in a hundred)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(truth, dtype=bool)
    rng = np.random.default_rng(seed)
    keys: dict[str, list[float]] = {}
    for _ in range(draws):
        fake = rng.uniform(size=len(y))
        values = _rates(counts(y, fake, gamma), "")
        values["auprc"] = average_precision_score(y, -fake)
        if not y.all():
            values["auroc"] = roc_auc_score(y, -fake)
        for k, v in values.items():
            keys.setdefault(k, []).append(v)
    out = {f"random_{k}": float(np.mean(v)) for k, v in keys.items()}  # precision: over draws predicting any
    for k in ("auroc", "auprc"):
        if k in keys:
            lo, hi = np.quantile(keys[k], [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
            out[f"random_{k}_ci_low"], out[f"random_{k}_ci_high"] = float(lo), float(hi)
    return out
