"""Reference samples and pooled whole-layer activation vectors for the gating methods.

* :func:`reference_ids` reads a channel's top reference samples from the cached capture
  statistics (``top_mean_ids``: O'Mahony et al. 2023 rank by the pooled activation;
  ``top_max_ids``: PURE, Dreyer et al. 2024, rank by the maximum spatial activation).
* :func:`pooled_activations` is the global-average-pooled layer output of a batch of images,
  one vector over ALL channels of the layer: ``a_c(x) = mean_hw z_c(x)``, optionally of
  ``relu(z)`` (PURE's "spatial mean of the layer's positive activations").
* :func:`check_alive` rejects a channel that never fires on the fit data.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from benchmark.core.errors import InputError
from benchmark.core.types import Context, NotApplicable, Target
from benchmark.engine.layers import check_channel, eval_mode, layer_activations

RANKINGS = ("mean", "max")


def check_target(context: Context, target: Target) -> None:
    """The target's layer must be the one the context's statistics describe."""
    if target.layer != context.layer:
        raise ValueError(
            f"target layer {target.layer!r} differs from the context's layer {context.layer!r}: "
            "the cached statistics (reference samples) describe the context's layer only")
    check_channel(target.channel, context.stats.num_channels, target.layer)


def reference_ids(context: Context, target: Target, n_ref: int, by: str = "mean") -> Tensor:
    """(n_ref,) dataset indices into ``context.fit`` of the channel's top samples, best first."""
    if by not in RANKINGS:
        raise ValueError(f"reference ranking must be one of {RANKINGS}, got {by!r}")
    check_target(context, target)
    if n_ref < 1:
        raise ValueError(f"n_ref must be >= 1, got {n_ref}")
    if n_ref > len(context.fit):
        raise InputError(f"n_ref={n_ref} exceeds the {len(context.fit)} images of the fit dataset")
    ids = (context.stats.top_mean_ids if by == "mean" else context.stats.top_max_ids)[target.channel]
    if n_ref > ids.numel():
        raise InputError(
            f"n_ref={n_ref} exceeds the {ids.numel()} reference samples per channel in the capture "
            f"statistics; capture with top_k >= {n_ref} or lower n_ref")
    return ids[:n_ref].clone()


def check_alive(context: Context, channel: int) -> None:
    """NotApplicable for a channel whose maximum activation is <= 0 on every fit image."""
    best = float(context.stats.top_max_values[channel, 0])
    if best <= 0.0:
        raise NotApplicable(
            f"channel {channel} never activates on the fit data (largest activation {best:g} <= 0): "
            "its reference samples are arbitrary, there is nothing to disentangle")


def pooled_activations(model: nn.Module, layer: str, images: Tensor, relu: bool = False,
                       batch_size: int = 64) -> Tensor:
    """(N, C) spatial mean of the layer output (of ``relu(output)`` with ``relu``), no grad."""
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    out = []
    with torch.no_grad(), eval_mode(model):
        for start in range(0, images.shape[0], batch_size):
            z = layer_activations(model, layer, images[start:start + batch_size])
            if z.dim() != 4:
                raise ValueError(f"layer {layer!r} outputs shape {tuple(z.shape)}; pooling needs (N, C, H, W)")
            out.append((z.clamp(min=0) if relu else z).mean(dim=(2, 3)))
    return torch.cat(out)


def pooled_fit(context: Context, ids: Tensor, relu: bool = False) -> Tensor:
    """(n, C) pooled activation vectors of ``context.fit`` samples ``ids`` (float64, CPU)."""
    rows = []
    for start in range(0, ids.numel(), context.batch_size):
        images = context.fit.images(ids[start:start + context.batch_size]).to(context.device)
        rows.append(pooled_activations(context.model, context.layer, images, relu, context.batch_size))
    return torch.cat(rows).double().cpu()
