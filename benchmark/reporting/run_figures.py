"""The figures of a run (PNG and PDF under ``RUN_DIR/figures``), drawn from saved traces
and results by the pure functions of :mod:`benchmark.reporting.plots`:

* ``density_<method>``: the ARV paper's density plots for the first pairs target;
* ``recovery_<method>``: recovered vs planted activation for the first planted target;
* ``gamma_sweep``: precision/recall of each method's polysemanticity over gamma;
* ``fvis_grid``: feature visualisations of the original channel and each method's virtual
  neurons for the first pairs target;
* ``attributions_<method>``: 2-D embedding of the reference features a clustering method
  clustered (when its split exposes ``info["features"]`` and ``info["clusters"]``);
* ``reference_crops_<target>``: each method's virtual neurons shown by their top reference
  images, cropped to the receptive field (:mod:`benchmark.reporting.crop_figure`).

The fvis grid and the embeddings reuse the run's splits of the first target instead of
fitting the methods again.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import torch

from benchmark.core.budget import StageTimer
from benchmark.core.types import NotApplicable
from benchmark.engine.traces import SUFFIX as TRACE_SUFFIX
from benchmark.engine.traces import load_trace
from benchmark.reporting import plots
from benchmark.storage.cache import model_fingerprint


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def write_figures(out: Path, results: pd.DataFrame, plans, methods, env, splits: dict | None = None,
                  timer: StageTimer | None = None) -> list[Path]:
    """Every figure of the module docstring. ``splits[(track, method)]``: the splits of the
    first target of a track already fitted by the run (refitted only when absent, e.g. after
    a resumed run); ``timer`` records ``figure/<name>`` seconds."""
    if not env.config.figures.enabled:
        return []
    timer = timer or StageTimer()
    fitted = _Fitted(splits or {})
    fig_dir = out / "figures"
    traces = [load_trace(p) for p in sorted((out / "traces").glob(f"*{TRACE_SUFFIX}"))]
    by_key = {(t["meta"]["track"], t["meta"]["method"], t["meta"]["target"]): t for t in traces}
    plans_by_track = {p.track: p for p in plans}
    written: list[Path] = []
    class_names = [c.name for c in env.fit.classes]
    pairs = plans_by_track.get("pairs")
    if pairs is not None and pairs.targets:
        first = pairs.targets[0].key
        for m in methods:
            trace = by_key.get(("pairs", m.name, first))
            if trace is not None and trace["meta"]["concepts"]:
                with timer("figure", "density"):
                    written += plots.density_plot(trace["orig"], trace["virtual"], trace["labels"],
                                                  list(trace["meta"]["concepts"]), class_names,
                                                  fig_dir / f"density_{_slug(m.name)}")
        with timer("figure", "fvis_grid"):
            written += _fvis_grid(fig_dir, pairs, methods, env.config.figures, fitted)
    planted = plans_by_track.get("planted")
    if planted is not None and planted.targets:
        first = planted.targets[0].key
        for m in methods:
            trace = by_key.get(("planted", m.name, first))
            if trace is not None and "parts" in trace:
                matching = _best_matching(trace["parts"], trace["virtual"])
                with timer("figure", "recovery"):
                    written += plots.recovery_scatter(trace["parts"], trace["virtual"], matching,
                                                      fig_dir / f"recovery_{_slug(m.name)}")
    with timer("figure", "gamma_sweep"):
        written += _gamma_sweep(fig_dir, results)
    layer = plans_by_track.get("layer")
    if layer is not None and layer.targets:
        with timer("figure", "attributions"):
            written += _attribution_embeddings(fig_dir, layer, methods, fitted)
    with timer("figure", "reference_crops"):
        from benchmark.reporting.crop_figure import reference_crop_figures

        written += reference_crop_figures(fig_dir, plans_by_track, methods)
    return written


def _best_matching(parts: torch.Tensor, virtual: torch.Tensor) -> list[int]:
    """For each planted part, the virtual neuron most correlated with it."""
    out = []
    for j in range(parts.shape[1]):
        corr = [torch.corrcoef(torch.stack([parts[:, j].float(), virtual[:, i].float()]))[0, 1].nan_to_num(-2.0)
                for i in range(virtual.shape[1])]
        out.append(int(torch.stack(corr).argmax()))
    return out


def _gamma_sweep(fig_dir: Path, results: pd.DataFrame) -> list[Path]:
    rows = results[(results["track"] == "detection") & results["column"].str.match(r"^(precision|recall)@")]
    rows = rows[(rows["status"] == "ok") & rows["metric"].str.startswith("wordnet_gamma")]  # one truth per figure
    if rows.empty:
        return []
    parts = rows["column"].str.extract(r"^(?P<kind>precision|recall)@(?P<gamma>[0-9.]+)$")
    sweep = rows.assign(kind=parts["kind"], gamma=parts["gamma"].astype(float))
    table = sweep.pivot_table(index=["method", "gamma"], columns="kind", values="value").reset_index()
    if not {"precision", "recall"} <= set(table.columns):
        return []
    return plots.gamma_sweep(table[["method", "gamma", "precision", "recall"]], fig_dir / "gamma_sweep")


class _Fitted:
    """The run's splits of a track's first target, refitting only what is missing."""

    def __init__(self, splits: dict):
        self.splits = splits

    def get(self, plan, method):
        split = self.splits.get((plan.track, method.name))
        if split is None or split.target != plan.targets[0]:
            split = method.instance.fit(plan.context_of(plan.targets[0]), plan.targets[0])  # may raise NotApplicable
        return split


def _fvis_grid(fig_dir: Path, plan, methods, figures, fitted: _Fitted) -> list[Path]:
    from benchmark.core.registry import FEATURE_VIS
    from benchmark.engine.fvis._objectives import channel_objective, split_objective

    options = {"steps": figures.fvis_steps}
    if figures.fvis_size is not None:
        options["image_size"] = figures.fvis_size
    backend = FEATURE_VIS.get(figures.fvis_backend)(**options)
    target = plan.targets[0]
    context = plan.context_of(target)
    normalize = context.fit.from_unit_range
    settings = {"backend": figures.fvis_backend, **options}  # part of every cache key

    def rendered(key: dict, objective, num: int) -> torch.Tensor:
        """Renderings cached under ``key`` (kind ``fvis_images``): a rerun draws, not renders."""
        compute = lambda: {"images": backend.render(objective, num, normalize).images}  # noqa: E731
        if context.cache is None or key is None:
            return compute()["images"]
        return context.cache.get_or_compute("fvis_images", {**key, **settings, "num": num}, compute)["images"]

    original = {"model": model_fingerprint(context.model, context.memo), "layer": target.layer, "channel": target.channel}
    images = {"original": rendered(original, channel_objective(context.model, target.layer, target.channel), 2)}
    for m in methods:
        try:
            split = fitted.get(plan, m)
        except NotApplicable:
            continue
        unit = split.info.get("unit_key")  # the run's unit: config, seeds, code, method, target
        images[m.name] = rendered({"unit": unit} if unit else None, split_objective(split), split.k)
    return plots.fvis_grid(images, fig_dir / "fvis_grid", title=f"{target.key} ({figures.fvis_backend})")


def _attribution_embeddings(fig_dir: Path, plan, methods, fitted: _Fitted) -> list[Path]:
    written = []
    target = plan.targets[0]
    for m in methods:
        try:
            split = fitted.get(plan, m)
        except NotApplicable:
            continue
        info = split.info
        if "features" in info and "clusters" in info:
            written += plots.attribution_embedding(torch.as_tensor(info["features"]), torch.as_tensor(info["clusters"]),
                                                   fig_dir / f"attributions_{_slug(m.name)}",
                                                   title=f"{m.name}: reference features of {target.key}")
    return written
