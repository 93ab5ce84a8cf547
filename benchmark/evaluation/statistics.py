"""Statistics behind every comparison the benchmark reports: per-target values, paired
tests, bootstrap intervals, Holm correction and the rule that decides what is bolded.

The unit of replication is a *target* (a planted channel, a channel/class pair, a layer
channel): a method's value on a target is first averaged over its seeds (every column
named ``seed`` or ``*_seed`` counts as a seed key), so seeds never inflate the number of
independent observations. Two methods are compared on the targets both have a value for.

* :func:`sign_flip_pvalue`: exact two-sided sign-flip (paired permutation) test of the mean
  of paired differences (all ``2**n`` sign patterns enumerated up to ``EXACT_MAX_N``
  differences; beyond, a seeded Monte Carlo of ``MC_RESAMPLES`` patterns with
  ``scipy.stats.permutation_test``, one sample, signs flipped). Chosen over Wilcoxon because it tests the mean
  that the table shows and needs no tie/zero corrections. With n paired targets the
  smallest attainable p is ``2 / 2**n`` (n = 2: 0.5, n = 5: 0.0625, n = 6: 0.031).
* :func:`bootstrap_ci`: percentile bootstrap of the mean (seeded; numpy).
* Cluster-aware versions, used wherever a track's targets come from two or more models
  (the planted track: one world CNN per model seed; targets of one model share its
  training, so they are not independent): :func:`cluster_sign_flip_pvalue` flips the sign
  of a whole cluster's differences at once (exact over all ``2**G`` patterns of G clusters
  up to ``EXACT_MAX_N``, else a seeded Monte Carlo), and :func:`cluster_bootstrap_ci`
  resamples clusters, then targets within each drawn cluster (two-stage bootstrap; Davison &
  Hinkley 1997, Sec. 3.8). Clusters are SEED DRAWS of one architecture (models named
  ``<name>@seed<s>``, :func:`seed_clustered`); distinct named networks (EfficientNet-Lite0
  and Lite1 on the real track) are fixed subjects, not draws from a population: there, as
  with one model, the targets are the units and the inference is about those models (the
  captions say which).
* :func:`holm`: Holm's step-down adjustment (equal to ``statsmodels.stats.multitest``'s).
* :func:`paired_comparisons`: every pair of methods per (track, metric, column): mean
  difference, its paired bootstrap CI, the sign-flip p and the Holm-adjusted p across the
  comparisons of that column.
* :func:`leaders`: the bolding rule of the leaderboard (see its docstring).
"""
from __future__ import annotations

import hashlib
import itertools
import math
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

ALPHA = 0.05
N_BOOT = 2000
LEVEL = 0.95
EXACT_MAX_N = 20  # 1,048,576 sign patterns
MC_RESAMPLES = 20_000
UNIT = ("model", "layer", "dataset", "target")  # one target; its seeds are averaged first
KEYS = ("track", "label", "metric", "column")


# ------------------------------------------------------------------ elementary tests
def _finite(values: Iterable[float], what: str) -> np.ndarray:
    x = np.asarray(list(values), dtype=float)
    if x.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what} must be finite (no NaN/inf); drop targets without a value first")
    return x


def sign_flip_pvalue(diffs: Iterable[float], seed: int = 0) -> float:
    """Two-sided p-value of "the paired differences are symmetric about 0" with the mean
    as statistic: the share of sign patterns whose |mean| is at least the observed one.

    Exact (all ``2**n`` patterns, :func:`_exact_sign_flip`) for n <= ``EXACT_MAX_N``, else
    ``MC_RESAMPLES`` seeded random patterns (scipy's ``permutation_test``). NaN for no
    differences; 1.0 when every difference is 0 or there is one.
    Example: diffs (1, 2, 3): only the all-plus and all-minus patterns reach |mean| 2,
    p = 2/8 = 0.25.

    Why not scipy for the exact test too: its exact branch takes 0.18 s at n = 16 and 5.5 s
    at n = 20, and its tolerance for numerically equal patterns is relative to the observed
    mean, so rounded differences that sum to exactly 0 get p < 1 (0.984 for
    (1.1, -0.7, -1.0, -0.7, -0.1, 0.3, 1.1); exact: 1). The enumeration here takes 3 ms at
    n = 16 and 0.16 s at n = 20, equals scipy on continuous differences and exact rational
    enumeration on rounded ones (tests/evaluation/test_statistics.py).
    """
    from scipy.stats import permutation_test

    d = _finite(diffs, "paired differences")
    if len(d) == 0:
        return math.nan
    if not np.any(d) or len(d) == 1:  # one difference: both sign patterns reach it (scipy needs two)
        return 1.0
    if len(d) <= EXACT_MAX_N:
        return _exact_sign_flip(d)
    res = permutation_test((d,), lambda x, axis: np.mean(x, axis=axis), vectorized=True,
                           permutation_type="samples", alternative="two-sided",
                           n_resamples=MC_RESAMPLES, rng=seed)
    return float(min(1.0, res.pvalue))


def _exact_sign_flip(values: np.ndarray) -> float:
    """Share of all ``2**n`` sign patterns s with |sum(s * values)| >= |sum(values)|; sums
    closer than 1e-12 x max(1, |sum|) count as equal (rounding of equal sums, e.g. ties of
    rounded differences). Enumerated in chunks of 65,536 patterns."""
    n, observed = len(values), abs(float(values.sum()))
    tolerance = 1e-12 * max(1.0, observed)
    hits, chunk = 0, 1 << min(n, 16)
    for start in range(0, 1 << n, chunk):
        codes = np.arange(start, start + chunk)[:, None]
        signs = ((codes >> np.arange(n)) & 1) * 2.0 - 1.0
        hits += int((np.abs(signs @ values) >= observed - tolerance).sum())
    return float(min(1.0, hits / (1 << n)))


def bootstrap_ci(values: Iterable[float], seed: int = 0, n_boot: int = N_BOOT,
                 level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean: ``rng = default_rng(seed)``,
    ``idx = rng.integers(0, n, (n_boot, n))``, quantiles of ``x[idx].mean(1)`` at
    (1 -+ level) / 2. NaNs for fewer than 2 values. Applied to paired differences it is
    the paired bootstrap CI of the mean difference."""
    x = _finite(values, "values")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if len(x) < 2:
        return math.nan, math.nan
    idx = np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))
    lo, hi = np.quantile(x[idx].mean(axis=1), [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def seed_clustered(models: Iterable[str]) -> bool:
    """True when the targets come from two or more seed draws of one model (``name@seed<s>``
    with the same name): resample and flip by model then. Distinct named models are fixed."""
    draws: dict[str, set[str]] = {}
    for model in set(models):
        name, sep, seed = str(model).partition("@seed")
        if sep:
            draws.setdefault(name, set()).add(seed)
    return any(len(seeds) > 1 for seeds in draws.values())


def cluster_sign_flip_pvalue(diffs: Iterable[float], clusters: Sequence, seed: int = 0) -> float:
    """Two-sided p of "each cluster's paired differences are symmetric about 0" with the
    mean of all differences as statistic, flipping the sign of whole clusters: exact (the
    share of all ``2**G`` patterns, G clusters) for G <= ``EXACT_MAX_N``, else
    (1 + hits) / (1 + ``MC_RESAMPLES``) over seeded random patterns. With one target per
    cluster it equals :func:`sign_flip_pvalue`. Smallest attainable p: ``2 / 2**G``."""
    d = _finite(diffs, "paired differences")
    labels = np.asarray(list(clusters))
    if labels.shape != d.shape:
        raise ValueError(f"one cluster label per difference: {labels.shape[0]} labels, {d.shape[0]} differences")
    if len(d) == 0:
        return math.nan
    if not np.any(d):
        return 1.0
    _, inverse = np.unique(labels, return_inverse=True)
    sums = np.bincount(inverse, weights=d)
    G, observed = len(sums), abs(float(sums.sum()))
    tolerance = 1e-12 * max(1.0, observed)
    if G <= EXACT_MAX_N:
        return _exact_sign_flip(sums)
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(MC_RESAMPLES, G))
    hits = int((np.abs(signs @ sums) >= observed - tolerance).sum())
    return float(min(1.0, (1 + hits) / (1 + MC_RESAMPLES)))


def cluster_bootstrap_ci(values: Iterable[float], clusters: Sequence, seed: int = 0, n_boot: int = N_BOOT,
                         level: float = LEVEL) -> tuple[float, float]:
    """Two-stage percentile bootstrap of the mean: per resample draw G clusters with
    replacement, then, for every drawn cluster independently, its targets with replacement;
    the statistic is the mean over all drawn targets. One cluster: :func:`bootstrap_ci`."""
    x = _finite(values, "values")
    labels = np.asarray(list(clusters))
    if labels.shape != x.shape:
        raise ValueError(f"one cluster label per value: {labels.shape[0]} labels, {x.shape[0]} values")
    uniq, inverse = np.unique(labels, return_inverse=True)
    G = len(uniq)
    if G < 2:
        return bootstrap_ci(x, seed=seed, n_boot=n_boot, level=level)
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, G, size=(n_boot, G))  # stage 1: the clusters of each resample
    sums = np.zeros((n_boot, G))
    for c in range(G):  # stage 2: an independent resample of cluster c at every slot that drew it
        member = x[inverse == c]
        slots = np.nonzero(drawn == c)
        sums[slots] = member[rng.integers(0, len(member), size=(len(slots[0]), len(member)))].sum(1)
    sizes = np.bincount(inverse, minlength=G).astype(float)
    means = sums.sum(1) / sizes[drawn].sum(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values (step-down, monotone, capped at 1) in the input order;
    NaN entries (untestable comparisons) stay NaN and do not count as hypotheses.

    With the m finite p-values sorted ascending, ``adj_(i) = max_{j <= i} min(1, (m - j) p_(j))``
    (0-based). Written here rather than calling ``statsmodels.stats.multitest.multipletests``
    (same numbers, checked in tests/evaluation/test_statistics.py) because that function runs a full
    ``gc.collect()`` on every Holm call: about 0.5 s each in a run, several seconds per report.
    """
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"pvalues must be one-dimensional, got shape {p.shape}")
    ok = np.isfinite(p)
    if ((p[ok] < 0) | (p[ok] > 1)).any():
        raise ValueError("p-values must lie in [0, 1]")
    out = np.full(p.shape, np.nan)
    finite = p[ok]
    if finite.size:
        order = np.argsort(finite, kind="stable")
        m = finite.size
        adjusted = np.minimum(1.0, np.maximum.accumulate(finite[order] * np.arange(m, 0, -1)))
        values = np.empty(m)
        values[order] = adjusted
        out[ok] = values
    return out


# ------------------------------------------------------------------ per-target values
def seed_columns(df: pd.DataFrame) -> list[str]:
    """The seed keys present: ``seed`` and every ``*_seed`` column, in table order."""
    return [c for c in df.columns if c == "seed" or str(c).endswith("_seed")]


def _scored(df: pd.DataFrame) -> pd.DataFrame:
    ok = (df["status"] == "ok") & np.isfinite(df["value"].astype(float))
    return df[ok & df["main"].astype(bool)]


def target_values(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (track, label, metric, column, model, layer, dataset, target): ``value``
    = mean over the target's seeds, ``n_seeds`` = how many seed combinations it averages,
    and ``higher_is_better``. Only main columns with status ok and a finite value count.
    ``df`` must be normalised (:func:`benchmark.reporting.leaderboards.normalise`)."""
    rows = _scored(df)
    grouped = rows.groupby(list(KEYS) + list(UNIT), sort=False)
    out = grouped.agg(value=("value", "mean"), higher_is_better=("higher_is_better", "first")).reset_index()
    seeds = seed_columns(rows)
    if rows.empty:  # nothing scored (e.g. a track where no metric applies): no targets
        out["n_seeds"] = pd.Series(dtype=int)
        return out
    keys = list(KEYS) + list(UNIT)
    # distinct seed combinations per group: a group's first row survives the de-duplication,
    # so the groups come out in the same (first-appearance) order as ``out``
    distinct = rows.drop_duplicates(keys + seeds) if seeds else rows
    counts = distinct.groupby(keys, sort=False).size()
    if len(counts) != len(out):
        raise AssertionError(f"seed counts for {len(counts)} groups, values for {len(out)}")
    out["n_seeds"] = counts.to_numpy().astype(int)
    return out


def seed_spread(df: pd.DataFrame) -> pd.DataFrame:
    """Per (track, label, metric, column): ``n_seeds`` and ``seed_sd``, the standard
    deviation (ddof = 1) over seed combinations of the mean over targets within that
    seed combination (NaN with a single seed)."""
    rows = _scored(df)
    seeds = seed_columns(rows)
    if not seeds:
        rows, seeds = rows.assign(seed=0), ["seed"]
    per_seed = rows.groupby(list(KEYS) + seeds, sort=False)["value"].mean().reset_index()
    return per_seed.groupby(list(KEYS), sort=False)["value"].agg(
        n_seeds="size", seed_sd=lambda v: float(v.std(ddof=1)) if len(v) > 1 else math.nan).reset_index()


# ------------------------------------------------------------------ paired comparisons
COMPARISON_COLUMNS = ["track", "metric", "column", "higher_is_better", "method_a", "method_b", "n_common",
                      "mean_a", "mean_b", "diff", "ci_low", "ci_high", "p", "p_holm", "significant", "better",
                      "clusters"]


_BLOCKS: "dict[tuple, list[dict]]" = {}  # content digest of one column's values -> its comparisons


def paired_comparisons(values: pd.DataFrame, seed: int = 0, n_boot: int = N_BOOT,
                       alpha: float = ALPHA) -> pd.DataFrame:
    """Every pair of methods for every (track, metric, column) with a direction.

    ``values``: :func:`target_values`. For each pair: ``n_common`` targets both scored,
    their means on those targets, ``diff`` = mean(a - b), its paired bootstrap CI, the
    exact sign-flip ``p`` (NaN below 2 common targets) and ``p_holm`` (Holm across the
    testable comparisons of that column). ``better`` names the method the direction
    favours when ``p_holm < alpha``, else "tie". Each column's block is memoised on the
    CONTENT of its values (a run's leaderboards and its report test the same columns once).
    """
    records = []
    for (track, metric, column), g in values.groupby(["track", "metric", "column"], sort=False):
        higher = g["higher_is_better"].iloc[0]
        if higher is None or (isinstance(higher, float) and math.isnan(higher)):
            continue
        data = g[["label", *UNIT, "value"]]
        digest = hashlib.sha256(pd.util.hash_pandas_object(data, index=False).to_numpy().tobytes()).hexdigest()
        key = (track, metric, column, bool(higher), digest, seed, n_boot, alpha)
        if key not in _BLOCKS:
            if len(_BLOCKS) >= 512:
                _BLOCKS.pop(next(iter(_BLOCKS)))
            _BLOCKS[key] = _column_comparisons(g, track, metric, column, bool(higher), seed, n_boot, alpha)
        records += [dict(r) for r in _BLOCKS[key]]
    return pd.DataFrame.from_records(records, columns=COMPARISON_COLUMNS)


def _column_comparisons(g: pd.DataFrame, track: str, metric: str, column: str, higher: bool, seed: int,
                        n_boot: int, alpha: float) -> list[dict]:
    """The comparisons of one (track, metric, column): see :func:`paired_comparisons`."""
    wide = g.pivot_table(index=list(UNIT), columns="label", values="value", aggfunc="mean", sort=False)
    clustered = seed_clustered(g["model"])
    block = []
    table = {label: wide[label].to_numpy(dtype=float) for label in wide.columns}
    models = wide.index.get_level_values("model").to_numpy()
    for a, b in itertools.combinations(list(dict.fromkeys(g["label"])), 2):
        both = ~np.isnan(table[a]) & ~np.isnan(table[b])
        xa, xb = table[a][both], table[b][both]
        d = xa - xb
        clusters = models[both]
        testable = len(d) >= 2
        lo, hi = (math.nan, math.nan)
        if testable:
            lo, hi = (cluster_bootstrap_ci(d, clusters, seed=seed, n_boot=n_boot) if clustered
                      else bootstrap_ci(d, seed=seed, n_boot=n_boot))
        p = math.nan
        if testable:
            p = cluster_sign_flip_pvalue(d, clusters, seed=seed) if clustered else sign_flip_pvalue(d, seed=seed)
        block.append(dict(track=track, metric=metric, column=column, higher_is_better=higher,
                          method_a=a, method_b=b, n_common=len(d),
                          mean_a=float(xa.mean()) if len(d) else math.nan,
                          mean_b=float(xb.mean()) if len(d) else math.nan,
                          diff=float(d.mean()) if len(d) else math.nan, ci_low=lo, ci_high=hi, p=p,
                          clusters=len(set(clusters)) if clustered else 0))
    adjusted = holm([r["p"] for r in block])
    for r, ph in zip(block, adjusted):
        r["p_holm"] = float(ph)
        r["significant"] = bool(np.isfinite(ph) and ph < alpha and r["diff"] != 0)
        a_wins = (r["diff"] > 0) == r["higher_is_better"]
        r["better"] = (r["method_a"] if a_wins else r["method_b"]) if r["significant"] else "tie"
    return block


def leaders(means: dict[str, float], counts: dict[str, int], n_targets: int, higher: bool | None,
            comparisons: pd.DataFrame) -> dict[str, str]:
    """Marks of one leaderboard column: ``{"label": "best"}`` or ``{"label": "tied", ...}``.

    The rule: among methods with a value in the column, the *leader* is the one with the
    best mean among those covering all ``n_targets`` targets. The leader is marked
    "best" (bolded) iff it is significantly better (Holm-adjusted sign-flip p < alpha,
    difference in the column's direction) than EVERY other method with a value. Otherwise
    the leader and every method not significantly different from it are marked "tied".
    Methods with partial coverage are never "best"; with no method covering all targets,
    or fewer than two methods, or no direction, nothing is marked.
    """
    present = {m: v for m, v in means.items() if counts.get(m, 0) > 0 and math.isfinite(v)}
    full = {m: v for m, v in present.items() if counts[m] >= n_targets}
    if higher is None or len(present) < 2 or not full:
        return {}
    leader = (max if higher else min)(full, key=lambda m: full[m])
    verdict: dict[str, bool] = {}
    for other in present:
        if other == leader:
            continue
        hit = comparisons[((comparisons["method_a"] == leader) & (comparisons["method_b"] == other))
                          | ((comparisons["method_a"] == other) & (comparisons["method_b"] == leader))]
        verdict[other] = bool(len(hit) and hit["significant"].iloc[0] and hit["better"].iloc[0] == leader)
    if all(verdict.values()):
        return {leader: "best"}
    return {leader: "tied", **{m: "tied" for m, beaten in verdict.items() if not beaten}}
