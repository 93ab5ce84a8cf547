"""``polysemy bench``: what the pipeline costs, measured, printed and saved as JSON.

Figures: images/s of a bare forward+backward pass (true-class logit, gradients of every
parameter, as in training without the optimiser step) and of the capture pass over the same
images, their ratio (the capture "overhead"), the bytes of the cached statistics for N and
N/2 images (streaming: independent of N), PURE's per-neuron attributions batched over
neurons vs the lean per-neuron loop (one forward + one plain backward per neuron) and
``Pure.fit`` of one neuron vs that loop, ARV surgery seconds per pair (fit with rho tuning +
activation ratios), per-method fit time per target, per-metric time, wall time, peak RAM
(and peak GPU memory on CUDA: ``--device cuda``), and the ARV pipeline stage by stage as a
multiple of its physical floor with each stage's peak RSS (:mod:`benchmark.run.floor_bench`).
"""
from __future__ import annotations

import dataclasses
import json
import resource
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader

from benchmark.core.config import RunConfig
from benchmark.core.registry import METHODS, METRICS
from benchmark.core.types import NotApplicable, Target
from benchmark.engine.capture import CaptureSpec, capture
from benchmark.engine.environment import Environment
from benchmark.engine.memo import memoized
from benchmark.run.crp_bench import crp_available, crp_speed
from benchmark.run.floor_bench import arv_pipeline_floor, format_floor
from benchmark.run.plugin_set import resolve
from benchmark.sources.datasets import Subset
from benchmark.storage.cache import Cache, atomic_write_text
from benchmark.tracks import TRACKS

FIELDS = ("model", "layer", "dataset", "images", "device", "bare_images_per_s", "capture_images_per_s",
          "capture_overhead", "stats_bytes_n", "stats_bytes_half_n", "attribution_batched_s",
          "attribution_loop_s", "attribution_speedup", "attribution_rate", "method_fit_s", "metric_s", "wall_s", "peak_ram_mb",
          "peak_gpu_mb")


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def bare_forward_backward(model, dataset, batch_size: int, device: torch.device) -> float:
    """Seconds for forward + backward of the true-class logits over ``dataset``."""
    def run():
        for images, labels in DataLoader(dataset, batch_size=batch_size):
            logits = model(images.to(device))
            logits.gather(1, labels.to(device)[:, None]).sum().backward()
        model.zero_grad(set_to_none=True)
    return _timed(run, device)[0]


def _stats_bytes(stats) -> int:
    return sum(t.numel() * t.element_size() for t in stats.to_tensors().values())


def _best(fn: Callable[[], Any], device: torch.device, repeats: int = 3) -> float:
    """Best-of-``repeats`` seconds (the first call of a path pays one-off warm-up costs)."""
    return min(_timed(fn, device)[0] for _ in range(repeats))


def attribution_speed(context, n_images: int = 100, n_neurons: int = 64, layer: str | None = None,
                      lower_layer: str | None = None) -> dict[str, Any]:
    """PURE's per-neuron attributions of ``n_images`` references (PURE: n_ref = 100) for
    ``n_neurons`` neurons of ``layer`` (default: the context's) read at ``lower_layer``:
    batched (one forward per batch shared by all neurons, backwards batched over them) vs
    the lean per-neuron loop (one forward and one plain backward per neuron, as the
    authors' loop), and ``Pure.fit`` of ONE neuron (attributions of its references + k-means,
    no cache) vs the lean loop's attributions of that neuron's references."""
    from benchmark.core.registry import METHODS
    from benchmark.engine.attribution import neuron_attributions, neuron_attributions_loop
    from benchmark.engine.layers import layer_activations
    from benchmark.engine.references import top_max_references

    layer = layer or context.layer
    n = min(n_images, len(context.fit))
    images = context.fit.images(range(n)).to(context.device)
    with torch.no_grad():
        width = layer_activations(context.model, layer, images[:1]).shape[1]
    channels = list(range(min(n_neurons, width)))
    args = (context.model, layer, lower_layer, images, channels)
    batched = _best(lambda: neuron_attributions(*args), context.device)
    lean = _best(lambda: neuron_attributions_loop(*args), context.device)
    out = {"attribution_batched_s": batched, "attribution_loop_s": lean, "attribution_speedup": lean / batched,
           "attribution_shape": f"{len(channels)} neurons x {n} images, {layer} over "
                                f"{lower_layer or 'its input'}",
           "attribution_rate": len(channels) * n / batched}
    if layer == context.layer and context.stats.top_max_ids.shape[1] >= 3:
        n_ref = min(n_images, int(context.stats.top_max_ids.shape[1]))
        pure = METHODS.get("pure")(k=2, n_ref=n_ref, lower_layer=lower_layer)
        channel = int(context.stats.top_max_values[:, 0].argmax())
        ctx = dataclasses.replace(context, cache=None)
        ids, _ = top_max_references(ctx, channel, n_ref)
        refs = ctx.fit.images(ids).to(context.device)
        out["pure_fit_one_s"] = _best(lambda: pure.fit(ctx, Target(ctx.model_name, layer, channel)), context.device)
        out["lean_one_s"] = _best(lambda: neuron_attributions_loop(ctx.model, layer, lower_layer, refs, [channel]),
                                  context.device)
        out["pure_fit_one_shape"] = f"channel {channel}, {n_ref} references"
    return out


def arv_pair_time(env: Environment, config: RunConfig) -> dict[str, Any]:
    """Seconds per pairs-track target of ARV surgery: fit (ARVs, closed-form rho tuning on
    every fit image of the two concepts, surgery, references) + activation ratios."""
    if "arv_surgery" not in METHODS.names() or not config.tracks.pairs.enabled:
        return {}
    plan = TRACKS["pairs"](env, config)
    method = resolve(METHODS, ["arv_surgery"], dict(config.method_params))[0].instance
    ratio = resolve(METRICS, ["activation_ratio"], dict(config.metric_params))[0].instance
    times, cpu = [], []
    for target in plan.targets[:2]:
        def run():
            split = memoized(method.fit(plan.context, target))
            try:
                ratio.score(split, plan.context)
            except NotApplicable:
                pass
        c0 = time.process_time()
        try:
            times.append(_timed(run, env.device)[0])
        except NotApplicable:
            continue
        cpu.append(time.process_time() - c0)
    if not times:
        return {}
    concepts = plan.targets[0].concepts or ()
    per_concept = [len(plan.context.fit.indices_of(list(c))) for c in concepts]
    return {"arv_pair_s": sum(times) / len(times), "arv_pair_cpu_s": sum(cpu) / len(cpu),
            "arv_pairs_timed": len(times), "arv_fit_images": per_concept}


def bench(config: RunConfig, images: int = 512, progress: bool = True, attribution_images: int = 100,
          attribution_neurons: int = 64, attribution_layer: str | None = None,
          attribution_lower: str | None = None) -> dict[str, Any]:
    """Measure everything listed in the module docstring for ``config``."""
    import tempfile

    start = time.perf_counter()
    scratch = tempfile.TemporaryDirectory(prefix="polysemy-bench-")  # nothing served from an old cache
    torch.manual_seed(config.seed)  # models built with random weights (bench_resnet50) are the same each time
    env = Environment(config, Cache(scratch.name), progress)
    device, layer = env.device, env.layer()
    n = min(images, len(env.fit))
    data = Subset(env.fit, range(n))
    half = Subset(env.fit, range(max(1, n // 2)))
    model = env.model
    report: dict[str, Any] = {"model": config.model.name, "layer": layer, "dataset": config.data.dataset,
                              "images": n, "device": str(device)}
    # first: its capture stage needs the fresh cache, and its peak RSS must not inherit the
    # training-like bare pass's (parameter gradients of the whole network)
    report.update(arv_pipeline_floor(env, config))
    bare_forward_backward(model, Subset(env.fit, range(min(n, config.batch_size))), config.batch_size, device)  # warm-up
    bare = bare_forward_backward(model, data, config.batch_size, device)
    spec = CaptureSpec(layer, top_k=config.capture.top_k, tau=config.capture.tau, batch_size=config.batch_size)
    cap_s, stats = _timed(lambda: capture(model, data, spec, device, progress=False), device)
    half_stats = capture(model, half, spec, device, progress=False)
    report.update(bare_images_per_s=n / bare, capture_images_per_s=n / cap_s, capture_overhead=cap_s / bare,
                  stats_bytes_n=_stats_bytes(stats), stats_bytes_half_n=_stats_bytes(half_stats))
    context = env.context(layer)
    report.update(attribution_speed(context, attribution_images, attribution_neurons, attribution_layer,
                                    attribution_lower))
    if attribution_lower and crp_available():  # the authors' way (zennit-crp), same neurons and images
        images = context.fit.images(range(min(attribution_images, len(context.fit)))).to(device)
        width = int(report["attribution_shape"].split()[0])
        report.update(crp_speed(context.model, attribution_layer or context.layer, attribution_lower, images,
                                list(range(width))))
    report.update(arv_pair_time(env, config))
    report.update(_method_and_metric_times(env, config))
    report["wall_s"] = time.perf_counter() - start
    report["peak_ram_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    scratch.cleanup()
    return report


def _method_and_metric_times(env: Environment, config: RunConfig) -> dict[str, Any]:
    plan = TRACKS["pairs"](env, config) if config.tracks.pairs.enabled else TRACKS["layer"](env, config)
    targets = plan.targets[:2]
    methods = resolve(METHODS, config.methods, dict(config.method_params))
    metrics = [m for m in resolve(METRICS, config.metrics, dict(config.metric_params)) if m.instance.scope == "split"]
    fit_s: dict[str, float] = {}
    metric_s: dict[str, list[float]] = {m.label: [] for m in metrics}
    for method in methods:
        times = []
        for target in targets:
            try:
                seconds, split = _timed(lambda: method.instance.fit(plan.context, target), env.device)
            except NotApplicable:
                continue
            times.append(seconds)
            for metric in metrics:
                try:
                    seconds, _ = _timed(lambda: metric.instance.score(split, plan.context), env.device)
                    metric_s[metric.label].append(seconds)
                except NotApplicable:
                    pass
        if times:
            fit_s[method.name] = sum(times) / len(times)
    return {"method_fit_s": fit_s, "metric_s": {k: sum(v) / len(v) for k, v in metric_s.items() if v},
            "timed_track": plan.track, "timed_targets": len(targets)}


def format_report(report: dict[str, Any]) -> str:
    lines = [f"polysemy bench: {report['model']} {report['layer']} on {report['images']} images of "
             f"{report['dataset']} ({report['device']})",
             f"  bare forward+backward   {report['bare_images_per_s']:10.1f} images/s",
             f"  capture pass            {report['capture_images_per_s']:10.1f} images/s",
             f"  capture overhead        {report['capture_overhead']:10.2f} x bare (target <= 1.3)",
             f"  cached stats, N images  {report['stats_bytes_n']:10d} bytes",
             f"  cached stats, N/2       {report['stats_bytes_half_n']:10d} bytes (streaming: equal)",
             f"  attributions batched    {report['attribution_batched_s']:10.3f} s ({report['attribution_shape']})",
             f"  attributions lean loop  {report['attribution_loop_s']:10.3f} s (one forward + one backward per neuron)",
             f"  attribution speed-up    {report['attribution_speedup']:10.1f} x batched vs lean (target >= 5)",
             f"  attribution rate        {report['attribution_rate']:10.1f} neuron-images/s (batched)"]
    if "pure_fit_one_s" in report:
        lines += [f"  Pure.fit, one neuron    {report['pure_fit_one_s']:10.3f} s ({report['pure_fit_one_shape']}; k-means included)",
                  f"  lean loop, one neuron   {report['lean_one_s']:10.3f} s (its references' attributions only)"]
    if "crp_s" in report:
        lines += [f"  zennit-crp CondAttribution {report['crp_s']:7.3f} s per-neuron loop ({report['crp_shape']}, the authors' way)",
                  f"  batched vs CRP          {report['crp_speedup']:10.1f} x (target >= 5), largest difference "
                  f"{report['crp_max_abs_diff']:.1e} (target <= 1e-5)"]
    if "arv_pair_s" in report:
        lines.append(f"  ARV surgery per pair    {report['arv_pair_s']:10.3f} s (fit + rho tuning + ratios; "
                     f"{report['arv_fit_images']} fit images per concept; target < 8 on bench_resnet50; "
                     f"CPU time {report['arv_pair_cpu_s']:.1f} s)")
    lines += format_floor(report)
    for name, s in report["method_fit_s"].items():
        lines.append(f"  fit {name:<20} {s:10.3f} s/target")
    for name, s in report["metric_s"].items():
        lines.append(f"  metric {name:<17} {s:10.3f} s/split")
    lines.append(f"  wall time               {report['wall_s']:10.1f} s")
    lines.append(f"  peak RAM                {report['peak_ram_mb']:10.0f} MB")
    if report.get("peak_gpu_mb") is not None:
        lines.append(f"  peak GPU memory         {report['peak_gpu_mb']:10.0f} MB")
    return "\n".join(lines)


def write_report(report: dict[str, Any], path: Path) -> Path:
    return atomic_write_text(path, json.dumps(report, indent=2, sort_keys=True, default=str))
