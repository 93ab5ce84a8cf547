"""PURE's per-neuron attributions computed the authors' way, with zennit-crp's
``CondAttribution``, as the reference and the yardstick of :mod:`benchmark.engine.attribution`.

The PURE authors compute a neuron's attribution vector with CRP (Achtibat et al. 2023): a
backward pass that starts at the neuron's layer (``start_layer``) with the neuron's positive
activation as initial relevance (``init_rel``; every other channel zero), records the relevance
arriving at the lower layer (``record_layer``), one conditional attribution per neuron. With an
empty zennit ``Composite`` (no LRP rule) the recorded relevance is the plain gradient, so
``sum_hw x * grad`` is the project's ``gradient`` backend, neuron by neuron, by an independent
implementation: :func:`crp_attributions` returns it normalised the same way.

zennit-crp 0.6.0 (the current release) declares ``zennit <= 0.4.6`` while the project uses
zennit 0.5.1 (its LRP backend), so it is installed without its dependencies (the Makefile
does, next to the dev tools); it imports and runs on zennit 0.5.1. :func:`crp_available` says
whether it is installed.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from benchmark.engine.attribution import EPS_NORM, neuron_attributions
from benchmark.engine.layers import eval_mode


def crp_available() -> bool:
    try:
        import crp.attribution  # noqa: F401
    except ImportError:
        return False
    return True


def crp_attributions(model: nn.Module, layer: str, lower_layer: str, images: Tensor,
                     channels: Sequence[int], normalize: bool = True) -> Tensor:
    """(len(channels), N, C_lower) PURE attribution vectors by CRP, one conditional backward per
    neuron over the batch ``images`` (the authors' per-neuron loop)."""
    from crp.attribution import CondAttribution
    from zennit.core import Composite

    attribution = CondAttribution(model, no_param_grad=True)
    out = []
    with eval_mode(model):
        for c in channels:
            def positive_channel(activation: Tensor, c: int = int(c)) -> Tensor:
                init = torch.zeros_like(activation)
                init[:, c] = activation[:, c].clamp(min=0)
                return init

            data = images.detach().clone().requires_grad_(True)
            result = attribution(data, [{layer: [int(c)]}], Composite(), record_layer=[lower_layer],
                                 start_layer=layer, init_rel=positive_channel)
            x, grad = result.activations[lower_layer], result.relevances[lower_layer]
            out.append((x * grad).sum((-2, -1)))
    vectors = torch.stack(out)
    if normalize:
        vectors = vectors / (vectors.abs().sum(-1, keepdim=True) + EPS_NORM)
    return vectors


def crp_speed(model: nn.Module, layer: str, lower_layer: str, images: Tensor, channels: Sequence[int]) -> dict[str, Any]:
    """Seconds of the project's batched attributions vs CRP's per-neuron loop on the same
    neurons and images (best of 2 each), and their largest absolute difference."""
    def best(fn):
        times, value = [], None
        for _ in range(2):
            start = time.perf_counter()
            value = fn()
            times.append(time.perf_counter() - start)
        return min(times), value

    ours_s, ours = best(lambda: neuron_attributions(model, layer, lower_layer, images, channels))
    crp_s, theirs = best(lambda: crp_attributions(model, layer, lower_layer, images, channels))
    return {"crp_s": crp_s, "ours_s": ours_s, "crp_speedup": crp_s / ours_s,
            "crp_max_abs_diff": float((ours - theirs).abs().max()),
            "crp_shape": f"{len(channels)} neurons x {len(images)} images, {layer} over {lower_layer}"}
