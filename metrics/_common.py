"""Helpers shared by the metrics: concept lookup, batching, spatial sums, the original
channel and its relative positive attribution (the image filter of Hesse et al. 2025).

Relative positive attribution of channel c for image n (``get_results.py`` of
github.com/visinf/disentangle-channels): with z the layer output and y_t the true-class
logit, ``R_c(n) = sum_hw max(z_c * dy_t/dz_c, 0) / sum_c' sum_hw max(z_c' * dy_t/dz_c', 0)``
(Input x Gradient per position, clamped BEFORE the spatial sum); 0 where the denominator
is 0.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from benchmark.core.types import Context, Split
from benchmark.engine.layers import channel_activation, check_channel, frozen_parameters, get_layer
from benchmark.engine.pool import batches as batches  # re-exported: the metrics batch through it
from benchmark.sources.datasets import ImageDataset


def split_concepts(split: Split) -> tuple[tuple[int, ...], ...] | None:
    """The concepts of a split: its own (one per virtual neuron) or else its target's."""
    return split.concepts if split.concepts is not None else split.target.concepts


def concept_indices(dataset: ImageDataset, concepts: Sequence[Sequence[int]] | None) -> Tensor:
    """Dataset indices of the images of any concept, or of every image when ``concepts`` is None."""
    if concepts is None:
        return torch.arange(len(dataset))
    classes = sorted({int(t) for cs in concepts for t in cs})
    return dataset.indices_of(classes)


def spatial_sum(maps: Tensor) -> Tensor:
    """Sum over the last two (spatial) dimensions: (..., H, W) -> (...)."""
    return maps.flatten(-2).sum(-1)


def original_with_attribution(model: nn.Module, layer: str, channel: int, images: Tensor,
                              labels: Tensor) -> tuple[Tensor, Tensor]:
    """The original channel map (N, H, W) and its relative positive attribution (N,).

    One forward and one backward of the true-class logits to the layer output only (the
    output is made a leaf by a temporary hook, so nothing below the layer is differentiated).
    """
    module = get_layer(model, layer)
    box: dict[str, Tensor] = {}

    def hook(_m: nn.Module, _args: tuple, output: Tensor) -> Tensor:
        leaf = output.detach().requires_grad_(True)
        box["z"] = leaf
        return leaf

    handle = module.register_forward_hook(hook)
    try:
        with frozen_parameters(model), torch.enable_grad():
            logits = model(images)
            if "z" not in box:
                raise RuntimeError(f"layer {layer!r} was not called during the forward pass")
            z = box["z"]
            check_channel(channel, z.shape[1], layer)
            true_logit = logits.gather(1, labels.long()[:, None]).sum()
            (grad,) = torch.autograd.grad(true_logit, z)
    finally:
        handle.remove()
    z = z.detach()
    positive = spatial_sum((z * grad).clamp(min=0))  # (N, C)
    total = positive.sum(1)
    share = torch.where(total > 0, positive[:, channel] / total.clamp(min=torch.finfo(total.dtype).tiny),
                        torch.zeros_like(total))
    return z[:, channel], share


def original_channel(context: Context, split: Split, images: Tensor) -> Tensor:
    """(N, H, W) map of the target channel in the ORIGINAL model (no gradients)."""
    with torch.no_grad():
        return channel_activation(context.model, split.target.layer, split.target.channel, images)
