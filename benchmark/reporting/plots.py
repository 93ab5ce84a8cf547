"""Figures from saved results and arrays: pure functions that write PNG and PDF.

* :func:`density_plot`: per concept, kernel density estimates of the spatially summed
  original channel and of each virtual neuron over that concept's images (the density
  plots of Hesse et al. 2025, "Disentangling Polysemantic Channels in CNNs", Fig. 3/4;
  scipy's ``gaussian_kde`` with Scott's bandwidth instead of seaborn).
* :func:`fvis_grid`: feature visualisations, one row per method ("original" first).
* :func:`attribution_embedding`: 2-D PCA (or t-SNE) of attribution vectors coloured by
  cluster, as PURE (Dreyer et al. 2024, Fig. 2) shows its circuit clusters.
* :func:`gamma_sweep`: precision-recall over the gamma sweep of polysemanticity
  detection, one line per method.
* :func:`recovery_scatter`: recovered vs planted activation, one panel per planted part.
* :func:`cd_diagram`: critical-difference diagrams (Demsar 2006), one panel per metric
  column: average ranks over targets, methods joined by a bar where the paired test
  (Holm-corrected, from :mod:`benchmark.evaluation.statistics`) cannot separate them; drawn by
  scikit-posthocs' ``critical_difference_diagram``.

Figures are built on ``matplotlib.figure.Figure`` (Agg canvas; pyplot's global state is
never touched) and written atomically. Every function returns ``(png_path, pdf_path)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

ORIGINAL_COLOR = "black"
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f")


def _array(x: Any, name: str, ndim: int) -> np.ndarray:
    """``x`` (array or tensor) as a float numpy array with ``ndim`` dimensions."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=float)
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {a.shape}")
    return a


def _figure(ncols: int, nrows: int = 1, size: tuple[float, float] = (4.2, 3.4)) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).reshape(nrows, ncols)
    return fig, axes


def _save(fig: Figure, path: str | Path) -> tuple[Path, Path]:
    """Write ``<stem>.png`` (150 dpi) and ``<stem>.pdf``; a .png/.pdf suffix is dropped."""
    from benchmark.storage.cache import atomic_write  # imported here: plotting alone needs no torch

    path = Path(path)
    base = path.with_suffix("") if path.suffix.lower() in (".png", ".pdf") else path
    out = []
    for fmt in ("png", "pdf"):
        target = base.with_name(f"{base.name}.{fmt}")
        atomic_write(target, lambda p, fmt=fmt: fig.savefig(p, format=fmt, dpi=150))
        out.append(target)
    return out[0], out[1]


def _name(class_names: Sequence[str] | Mapping[int, str], c: int) -> str:
    try:
        return str(class_names[c])
    except (KeyError, IndexError):
        return f"class {c}"


def density_plot(orig: Any, virtual: Any, labels: Any, concepts: Sequence[Sequence[int]],
                 class_names: Sequence[str] | Mapping[int, str], path: str | Path,
                 title: str | None = None,
                 virtual_names: Sequence[str] | None = None) -> tuple[Path, Path]:
    """One panel per concept: densities of ``orig`` (N,) and of each column of
    ``virtual`` (N, k) over the images whose ``labels`` (N,) are in that concept
    (a tuple of class ids). Values are spatial sums of the channel's activations."""
    o = _array(orig, "orig (N,)", 1)
    v = _array(virtual, "virtual (N, k)", 2)
    y = _array(labels, "labels (N,)", 1)
    if not (len(o) == len(v) == len(y)):
        raise ValueError(f"orig, virtual and labels need the same N, got {len(o)}, {len(v)}, {len(y)}")
    if np.any(y != np.round(y)):
        raise ValueError("labels must be integer class ids")
    if not concepts or any(len(c) == 0 for c in concepts):
        raise ValueError(f"concepts must be a non-empty list of non-empty class-id tuples, got {concepts!r}")
    k = v.shape[1]
    names = list(virtual_names) if virtual_names is not None else [f"virtual {i + 1}" for i in range(k)]
    if len(names) != k:
        raise ValueError(f"virtual_names has {len(names)} names for k={k} virtual neurons")
    from scipy.stats import gaussian_kde

    fig, axes = _figure(len(concepts))
    for ax, concept in zip(axes[0], concepts):
        mask = np.isin(y, np.asarray(concept))
        ax.set_title("images of " + " + ".join(_name(class_names, c) for c in concept)
                     + f" (n={int(mask.sum())})")
        ax.set_xlabel("spatially summed activation")
        ax.set_ylabel("density")
        if mask.sum() == 0:
            ax.text(0.5, 0.5, "no images of this concept", ha="center", va="center",
                    transform=ax.transAxes)
            continue
        series = [("original", o[mask], ORIGINAL_COLOR, "--")] + [
            (names[i], v[mask, i], PALETTE[i % len(PALETTE)], "-") for i in range(k)]
        lo = min(s.min() for _, s, _, _ in series)
        hi = max(s.max() for _, s, _, _ in series)
        pad = 0.15 * (hi - lo) if hi > lo else 1.0
        grid = np.linspace(lo - pad, hi + pad, 400)
        for label, values, color, style in series:
            if len(values) < 2 or np.ptp(values) == 0:  # a KDE needs spread: mark the value
                ax.axvline(values[0], color=color, linestyle=style, label=f"{label} (constant)")
                continue
            dens = gaussian_kde(values)(grid)
            ax.plot(grid, dens, color=color, linestyle=style, linewidth=1.8, label=label,
                    zorder=5 if label == "original" else 3)  # dashed original stays visible
            ax.fill_between(grid, dens, color=color, alpha=0.08)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    fig.suptitle(title or "Densities of the original channel and its virtual neurons per concept")
    return _save(fig, path)


def fvis_grid(images: Mapping[str, Any], path: str | Path, title: str) -> tuple[Path, Path]:
    """Rows = methods ("original" first, then in the mapping's order), columns = virtual
    neurons / samples. Each value is a (n, 3, H, W) image batch with values in [0, 1]."""
    if not images:
        raise ValueError("fvis_grid needs at least one method's images")
    rows = sorted(images, key=lambda m: m != "original")
    batches = {}
    for m in rows:
        a = _array(images[m], f"images[{m!r}] (n, 3, H, W)", 4)
        if a.shape[1] not in (1, 3) or a.shape[0] == 0:
            raise ValueError(f"images[{m!r}] must be (n >= 1, 3, H, W), got shape {a.shape}")
        if a.min() < -1e-4 or a.max() > 1 + 1e-4:
            raise ValueError(f"images[{m!r}] must lie in [0, 1], got range [{a.min():.3g}, {a.max():.3g}]")
        batches[m] = np.clip(a, 0, 1).transpose(0, 2, 3, 1)
    ncols = max(len(b) for b in batches.values())
    fig, axes = _figure(ncols, len(rows), size=(2.0, 2.15))
    for r, m in enumerate(rows):
        for j, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(batches[m]):
                ax.set_axis_off()
                continue
            img = batches[m][j]
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
            single = m == "original" and len(batches[m]) == 1
            ax.set_title("original" if single else
                         f"sample {j + 1}" if m == "original" else f"virtual {j + 1}", fontsize=9)
            if j == 0:
                ax.set_ylabel(m, fontsize=10, fontweight="bold")
    fig.suptitle(title)
    return _save(fig, path)


def _pca2(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First two principal components (signs fixed: largest loading positive) and the
    fraction of variance each explains."""
    xc = x - x.mean(axis=0)
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    vt = vt[:2] * np.sign(vt[:2][np.arange(2), np.abs(vt[:2]).argmax(axis=1)])[:, None]
    total = (s ** 2).sum()
    return xc @ vt.T, (s[:2] ** 2) / total if total > 0 else np.zeros(2)


def attribution_embedding(vectors: Any, clusters: Any, path: str | Path, title: str,
                          method: str = "pca", seed: int = 0,
                          cluster_names: Sequence[str] | None = None) -> tuple[Path, Path]:
    """Scatter of a 2-D embedding of ``vectors`` (N, D) coloured by ``clusters`` (N,)
    integer ids. ``method``: "pca" (exact SVD) or "tsne" (scikit-learn, seeded)."""
    x = _array(vectors, "vectors (N, D)", 2)
    c = _array(clusters, "clusters (N,)", 1)
    if len(c) != len(x):
        raise ValueError(f"vectors has {len(x)} rows but clusters has {len(c)}")
    if len(x) < 3 or x.shape[1] < 2:
        raise ValueError(f"an embedding needs N >= 3 vectors of D >= 2 dims, got shape {x.shape}")
    if method == "pca":
        xy, var = _pca2(x)
        axis = [f"PC {i + 1} ({100 * var[i]:.0f}% of variance)" for i in range(2)]
    elif method == "tsne":
        from sklearn.manifold import TSNE

        xy = TSNE(2, perplexity=min(30.0, (len(x) - 1) / 3), random_state=seed,
                  init="pca").fit_transform(x)
        axis = ["t-SNE 1", "t-SNE 2"]
    else:
        raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")
    ids = sorted(set(c.astype(int).tolist()))
    if cluster_names is not None and len(cluster_names) != len(ids):
        raise ValueError(f"cluster_names has {len(cluster_names)} names for {len(ids)} clusters")
    fig, axes = _figure(1, size=(5.6, 4.6))
    ax = axes[0, 0]
    markers = "osD^vP*X"
    for i, cid in enumerate(ids):
        m = c.astype(int) == cid
        name = cluster_names[i] if cluster_names is not None else f"cluster {cid}"
        ax.scatter(xy[m, 0], xy[m, 1], s=22, alpha=0.8, color=PALETTE[i % len(PALETTE)],
                   marker=markers[i % len(markers)], edgecolors="none", label=f"{name} (n={int(m.sum())})")
    ax.set_xlabel(axis[0])
    ax.set_ylabel(axis[1])
    ax.set_title(title)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def gamma_sweep(df_sweep: pd.DataFrame, path: str | Path,
                title: str = "Polysemanticity detection over the gamma sweep") -> tuple[Path, Path]:
    """Left: precision vs recall, one line per method, points ordered by gamma (first and
    last gamma annotated). Right: precision (solid) and recall (dashed) against gamma.
    ``df_sweep`` has columns method, gamma, precision, recall (NaN points are skipped)."""
    need = ["method", "gamma", "precision", "recall"]
    missing = [c for c in need if c not in df_sweep.columns]
    if missing:
        raise ValueError(f"df_sweep lacks columns {missing}; it needs {need}")
    if df_sweep.empty:
        raise ValueError("df_sweep is empty")
    fig, axes = _figure(2, size=(4.8, 4.0))
    pr, vs = axes[0]
    for i, (method, g) in enumerate(df_sweep.groupby("method", sort=False)):
        g = g.sort_values("gamma")
        color = PALETTE[i % len(PALETTE)]
        ok = g[np.isfinite(g["precision"].astype(float)) & np.isfinite(g["recall"].astype(float))]
        pr.plot(ok["recall"], ok["precision"], "-o", color=color, markersize=4, label=str(method))
        ends = ok.iloc[[0, -1]] if len(ok) else ok
        for _, end in ends.iterrows():
            pr.annotate(f"γ={end['gamma']:.2g}", (end["recall"], end["precision"]), fontsize=7,
                        color=color, xytext=(4, 4), textcoords="offset points")
        vs.plot(g["gamma"], g["precision"], "-o", color=color, markersize=3)
        vs.plot(g["gamma"], g["recall"], "--s", color=color, markersize=3)
    vs.plot([], [], "-o", color="gray", markersize=3, label="precision")
    vs.plot([], [], "--s", color="gray", markersize=3, label="recall")
    pr.set(xlabel="recall", ylabel="precision", xlim=(-0.02, 1.12), ylim=(-0.02, 1.08),
           title="precision-recall over gamma")
    vs.set(xlabel="gamma (polysemantic if score < gamma)", ylabel="precision / recall",
           ylim=(-0.02, 1.08), title="precision and recall against gamma")
    pr.legend(fontsize=8, title="method", title_fontsize=8)
    vs.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def recovery_scatter(true_parts: Any, virtual: Any, matching: Sequence[int | None],
                     path: str | Path, title: str = "Recovery of planted parts",
                     part_names: Sequence[str] | None = None) -> tuple[Path, Path]:
    """One panel per planted part i: ``true_parts[:, i]`` (N, P) against the virtual
    neuron ``virtual[:, matching[i]]`` (N, k), with the Pearson correlation in the title;
    ``matching[i] = None`` marks an unmatched part."""
    t = _array(true_parts, "true_parts (N, P)", 2)
    v = _array(virtual, "virtual (N, k)", 2)
    if len(t) != len(v):
        raise ValueError(f"true_parts has {len(t)} rows but virtual has {len(v)}")
    if len(matching) != t.shape[1]:
        raise ValueError(f"matching has {len(matching)} entries for {t.shape[1]} planted parts")
    if any(j is not None and not 0 <= int(j) < v.shape[1] for j in matching):
        raise ValueError(f"matching entries must be None or in [0, {v.shape[1]}), got {list(matching)}")
    names = list(part_names) if part_names is not None else [f"part {i + 1}" for i in range(t.shape[1])]
    fig, axes = _figure(t.shape[1], size=(4.0, 3.8))
    for i, ax in enumerate(axes[0]):
        ax.set_xlabel(f"planted {names[i]} (spatial sum)")
        j = matching[i]
        if j is None:
            ax.set_title(f"{names[i]}: unmatched")
            continue
        x, y = t[:, i], v[:, int(j)]
        r = np.corrcoef(x, y)[0, 1] if np.std(x) > 0 and np.std(y) > 0 else float("nan")
        ax.scatter(x, y, s=12, alpha=0.6, color=PALETTE[i % len(PALETTE)], edgecolors="none")
        lo, hi = min(x.min(), y.min()), max(x.max(), y.max())
        ax.plot([lo, hi], [lo, hi], color="gray", linestyle=":", linewidth=1, label="y = x")
        ax.set_ylabel(f"virtual {int(j) + 1} (spatial sum)")
        ax.set_title(f"{names[i]} ↔ virtual {int(j) + 1}: r = " + ("n/a" if np.isnan(r) else f"{r:.3f}"))
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(title)
    return _save(fig, path)


def cd_diagram(panels: Sequence[tuple[str, Mapping[str, float], pd.DataFrame]], path: str | Path,
               title: str, alpha: float = 0.05) -> tuple[Path, Path]:
    """Critical-difference diagram, one panel per ``(name, ranks, p_matrix)``: ``ranks``
    maps a method to its average rank (1 = best), ``p_matrix`` is a square DataFrame of
    (adjusted) p-values indexed by the same methods (diagonal 1); methods with p >= alpha
    are joined by a crossbar."""
    import scikit_posthocs as sp

    if not panels:
        raise ValueError("cd_diagram needs at least one panel")
    for name, ranks, p in panels:
        if len(ranks) < 2:
            raise ValueError(f"panel {name!r} needs at least two methods, got {len(ranks)}")
        if set(p.index) != set(ranks) or set(p.columns) != set(ranks):
            raise ValueError(f"panel {name!r}: p_matrix must be indexed by the ranked methods {sorted(ranks)}")
    fig, axes = _figure(1, len(panels), size=(7.5, 0.5 + 0.33 * max(len(r) for _, r, _ in panels)))
    methods = list(dict.fromkeys(m for _, ranks, _ in panels for m in ranks))
    colors = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(methods)}  # one colour per method throughout
    for ax, (name, ranks, p) in zip(axes[:, 0], panels):
        sp.critical_difference_diagram(pd.Series(ranks, dtype=float), p.astype(float), ax=ax, alpha=alpha,
                                       color_palette={m: colors[m] for m in ranks},
                                       label_fmt_left="{label} ({rank:.2f})",
                                       label_fmt_right="({rank:.2f}) {label}")
        ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
