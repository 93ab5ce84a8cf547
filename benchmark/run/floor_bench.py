"""The ARV pipeline against its physical floor, stage by stage, with each stage's peak RSS
(part of ``polysemy bench``).

The floor: ARV's shared statistics need, for every fit and held-out image, one forward pass
and one backward pass from the true-class logit to the studied layer's output (Input x
Gradient at that layer; no parameter gradients). :func:`layer_floor` times exactly that, on
the same images, batch size and device, in the same process. Each stage of the pipeline as the
run executes it is then timed on a fresh cache and printed as a multiple of the floor:

* ``capture``     -- the capture pass over the fit split (:func:`benchmark.engine.capture.cached_capture`);
* ``candidates``  -- the pairs track's plan (tau/p/gamma candidate rule, or the given pairs);
* ``fit``         -- ``arv_surgery`` on every pair (ARVs, rho tuning on the concepts' fit images, masks, surgery);
* ``val_ratios``  -- ``activation_ratio`` of every split on the held-out images.

Peak RSS per stage is the kernel's high-water mark (``VmHWM``) reset before the stage
(``/proc/self/clear_refs``; where that is not allowed, the process-wide peak is shown).
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader

from benchmark.core.config import RunConfig
from benchmark.core.registry import METHODS, METRICS
from benchmark.core.types import NotApplicable
from benchmark.engine.environment import Environment
from benchmark.engine.layers import eval_mode, frozen_parameters, get_layer
from benchmark.engine.memo import memoized
from benchmark.run.plugin_set import resolve
from benchmark.sources.datasets import ImageDataset
from benchmark.tracks import TRACKS

STATUS, CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark of this process; False where that is not allowed."""
    try:
        CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _peak_mb() -> float:
    try:
        found = re.search(r"VmHWM:\s+(\d+) kB", STATUS.read_text())
    except OSError:
        found = None
    if found:
        return int(found.group(1)) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _stage(fn: Callable[[], Any], device: torch.device) -> tuple[float, float, Any]:
    """(seconds, peak RSS in MB during the call, result)."""
    _reset_peak()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, _peak_mb(), out


def layer_floor(model: torch.nn.Module, layer: str, datasets: list[ImageDataset], batch_size: int,
                device: torch.device) -> float:
    """Seconds of one forward + one backward from the true-class logit to ``layer``'s output
    over every image of ``datasets`` (parameters frozen: no parameter gradient)."""
    box: dict[str, torch.Tensor] = {}

    def hook(_module, _args, output):
        box["z"] = output.detach().requires_grad_(True)
        return box["z"]

    handle = get_layer(model, layer).register_forward_hook(hook)
    try:
        with eval_mode(model), frozen_parameters(model), torch.enable_grad():
            def run():
                for data in datasets:
                    for images, labels in DataLoader(data, batch_size=batch_size):
                        logits = model(images.to(device))
                        true = logits.gather(1, labels.to(device)[:, None]).sum()
                        torch.autograd.grad(true, box["z"])
            seconds, _, _ = _stage(run, device)
    finally:
        handle.remove()
    return seconds


def arv_pipeline_floor(env: Environment, config: RunConfig) -> dict[str, Any]:
    """The stages of the module docstring on ``env`` (whose cache must be fresh for the
    capture to be timed), each in seconds, as a multiple of the floor, and its peak RSS."""
    if "arv_surgery" not in METHODS.names() or not config.tracks.pairs.enabled:
        return {}
    layer = env.layer(config.tracks.pairs.layer)
    floor = layer_floor(env.model, layer, [env.fit, env.heldout], config.batch_size, env.device)
    method = resolve(METHODS, ["arv_surgery"], dict(config.method_params))[0].instance
    ratio = resolve(METRICS, ["activation_ratio"], dict(config.metric_params))[0].instance
    stages: dict[str, dict[str, float]] = {}

    def record(name: str, fn: Callable[[], Any]) -> Any:
        seconds, peak, out = _stage(fn, env.device)
        stages[name] = {"s": seconds, "floor_ratio": seconds / floor, "peak_rss_mb": peak}
        return out

    record("capture", lambda: env.context(layer))
    plan = record("candidates", lambda: TRACKS["pairs"](env, config))

    def fit_all():
        splits = []
        for target in plan.targets:
            try:
                splits.append(memoized(method.fit(plan.context, target)))
            except NotApplicable:
                pass
        return splits

    splits = record("fit", fit_all)

    def ratios():
        for split in splits:
            try:
                ratio.score(split, plan.context)
            except NotApplicable:
                pass

    record("val_ratios", ratios)
    total = sum(s["s"] for s in stages.values())
    return {"floor_s": floor, "floor_images": len(env.fit) + len(env.heldout), "pipeline_stages": stages,
            "pipeline_s": total, "pipeline_floor_ratio": total / floor, "pipeline_pairs": len(splits),
            "pipeline_peak_rss_mb": max(s["peak_rss_mb"] for s in stages.values())}


def format_floor(report: dict[str, Any]) -> list[str]:
    if "pipeline_stages" not in report:
        return []
    lines = [f"  ARV pipeline vs the floor (one forward + backward to the layer per fit and held-out image: "
             f"{report['floor_images']} images, {report['floor_s']:.2f} s; {report['pipeline_pairs']} pairs):"]
    for name, s in report["pipeline_stages"].items():
        lines.append(f"    {name:<12} {s['s']:8.2f} s {s['floor_ratio']:6.2f} x floor   peak RSS {s['peak_rss_mb']:7.0f} MB")
    lines.append(f"    {'whole':<12} {report['pipeline_s']:8.2f} s {report['pipeline_floor_ratio']:6.2f} x floor "
                 f"(target <= 1.5; capture <= 1.2)   peak RSS {report['pipeline_peak_rss_mb']:7.0f} MB (target <= 2048)")
    return lines
