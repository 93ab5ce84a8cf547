"""Figures: every plot writes a non-empty PNG and PDF, and rejects bad shapes with a
specific error."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from benchmark.reporting import plots

RNG = np.random.default_rng(0)


def _check(paths, tmp_path, stem):
    png, pdf = paths
    assert (png, pdf) == (tmp_path / f"{stem}.png", tmp_path / f"{stem}.pdf")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 1000
    assert not list(tmp_path.glob(".*.tmp"))  # atomic: no temp files left


def _density_inputs(n=40):
    labels = np.repeat([0, 1], n // 2)
    orig = RNG.normal(5, 1, n)
    virtual = np.stack([np.where(labels == 0, orig, 0.1 * orig), np.where(labels == 1, orig, 0.0)], 1)
    return orig, virtual, labels


def test_density_plot(tmp_path):
    orig, virtual, labels = _density_inputs()
    # virtual 2 is exactly 0 on class 0: constant values are drawn as a line, not a KDE
    paths = plots.density_plot(orig, torch.tensor(virtual), labels, [(0,), (1,)],
                               ["rock python", "organ"], tmp_path / "density.png")
    _check(paths, tmp_path, "density")


def test_density_plot_bad_shapes(tmp_path):
    orig, virtual, labels = _density_inputs()
    with pytest.raises(ValueError, match=r"virtual \(N, k\) must have 2 dimension"):
        plots.density_plot(orig, virtual[:, 0], labels, [(0,)], ["a", "b"], tmp_path / "d")
    with pytest.raises(ValueError, match="same N"):
        plots.density_plot(orig[:-1], virtual, labels, [(0,)], ["a", "b"], tmp_path / "d")
    with pytest.raises(ValueError, match="non-empty class-id tuples"):
        plots.density_plot(orig, virtual, labels, [()], ["a", "b"], tmp_path / "d")


def test_fvis_grid(tmp_path):
    images = {"arv_surgery": torch.rand(2, 3, 16, 16), "original": torch.rand(1, 3, 16, 16),
              "pure": torch.rand(3, 3, 16, 16)}
    _check(plots.fvis_grid(images, tmp_path / "fvis", "channel 7"), tmp_path, "fvis")


def test_fvis_grid_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"images\['m'\] \(n, 3, H, W\) must have 4 dimension"):
        plots.fvis_grid({"m": torch.rand(3, 16, 16)}, tmp_path / "f", "t")
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        plots.fvis_grid({"m": torch.rand(1, 3, 8, 8) * 2}, tmp_path / "f", "t")
    with pytest.raises(ValueError, match=r"must be \(n >= 1, 3, H, W\)"):
        plots.fvis_grid({"m": torch.rand(1, 4, 8, 8)}, tmp_path / "f", "t")


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_attribution_embedding(tmp_path, method):
    vectors = np.concatenate([RNG.normal(0, 1, (15, 6)) + 4, RNG.normal(0, 1, (15, 6)) - 4])
    clusters = np.repeat([0, 1], 15)
    paths = plots.attribution_embedding(vectors, clusters, tmp_path / "emb", "clusters", method=method)
    _check(paths, tmp_path, "emb")


def test_pca_known_answer():
    # points on a line along (3, 4)/5 plus a small orthogonal spread: PC 1 carries it
    t = np.linspace(-1, 1, 11)
    x = np.outer(t, [3.0, 4.0]) + np.outer(np.sin(7 * t) * 0.01, [-4.0, 3.0])
    xy, var = plots._pca2(x)
    assert np.allclose(np.abs(xy[:, 0]), np.abs(5 * t), atol=0.06)
    assert var[0] > 0.999 and var.sum() == pytest.approx(1.0)


def test_attribution_embedding_bad_input(tmp_path):
    with pytest.raises(ValueError, match="vectors has 10 rows but clusters has 9"):
        plots.attribution_embedding(np.zeros((10, 4)), np.zeros(9), tmp_path / "e", "t")
    with pytest.raises(ValueError, match="method must be 'pca' or 'tsne'"):
        plots.attribution_embedding(RNG.normal(size=(10, 4)), np.zeros(10), tmp_path / "e", "t", method="umap")


def _sweep():
    gammas = np.round(np.arange(0.3, 0.71, 0.1), 2)
    return pd.DataFrame([dict(method=m, gamma=g, precision=1 - g * s, recall=g * s)
                         for m, s in [("arv", 1.0), ("pure", 0.5)] for g in gammas])


def test_gamma_sweep(tmp_path):
    _check(plots.gamma_sweep(_sweep(), tmp_path / "gamma.pdf"), tmp_path, "gamma")


def test_gamma_sweep_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"lacks columns \['recall'\]"):
        plots.gamma_sweep(_sweep().drop(columns="recall"), tmp_path / "g")
    with pytest.raises(ValueError, match="empty"):
        plots.gamma_sweep(_sweep().iloc[:0], tmp_path / "g")


def test_recovery_scatter(tmp_path):
    parts = RNG.normal(size=(50, 2))
    virtual = np.stack([parts[:, 1], parts[:, 0] + 0.1 * RNG.normal(size=50), RNG.normal(size=50)], 1)
    _check(plots.recovery_scatter(parts, virtual, [1, 0], tmp_path / "rec"), tmp_path, "rec")


def test_recovery_scatter_bad_input(tmp_path):
    parts, virtual = np.zeros((5, 2)), np.zeros((5, 3))
    with pytest.raises(ValueError, match="matching has 1 entries for 2 planted parts"):
        plots.recovery_scatter(parts, virtual, [0], tmp_path / "r")
    with pytest.raises(ValueError, match=r"matching entries must be None or in \[0, 3\)"):
        plots.recovery_scatter(parts, virtual, [0, 3], tmp_path / "r")
    with pytest.raises(ValueError, match=r"true_parts \(N, P\) must have 2 dimension"):
        plots.recovery_scatter(np.zeros(5), virtual, [0], tmp_path / "r")


def _cd_panel(names=("a", "b", "c")):
    ranks = {n: float(i + 1) for i, n in enumerate(names)}
    p = pd.DataFrame(1.0, index=list(names), columns=list(names))
    p.iloc[0, -1] = p.iloc[-1, 0] = 0.01  # first and last separated, the rest tied
    return ("m / v", ranks, p)


def test_cd_diagram(tmp_path):
    _check(plots.cd_diagram([_cd_panel(), _cd_panel(("x", "y"))], tmp_path / "cd", "track t"), tmp_path, "cd")


def test_cd_diagram_bad_input(tmp_path):
    name, ranks, p = _cd_panel()
    with pytest.raises(ValueError, match="at least one panel"):
        plots.cd_diagram([], tmp_path / "cd", "t")
    with pytest.raises(ValueError, match="must be indexed by the ranked methods"):
        plots.cd_diagram([(name, ranks, p.drop(index="c"))], tmp_path / "cd", "t")
    with pytest.raises(ValueError, match="at least two methods"):
        plots.cd_diagram([(name, {"a": 1.0}, p.loc[["a"], ["a"]])], tmp_path / "cd", "t")
