"""Reference samples of a channel: the fit images on which it responds most.

PURE (Dreyer et al., CVPR-W 2024) and CRP take a channel's references as the images with the
largest maximum activation; the capture pass keeps those ids (top-k by max) for every
channel, and these helpers read them, or compute them in one pass when more are needed.
"""
from __future__ import annotations

import torch
from torch import Tensor

from benchmark.core.errors import InputError
from benchmark.core.types import Context
from benchmark.engine.layers import eval_mode, layer_activations


def max_activations(context: Context, channel: int) -> Tensor:
    """(len(fit),) maximum spatial activation of ``channel`` on every fit image (one pass)."""
    out = []
    with torch.no_grad(), eval_mode(context.model):
        for start in range(0, len(context.fit), context.batch_size):
            images = context.fit.images(range(start, min(start + context.batch_size, len(context.fit))))
            z = layer_activations(context.model, context.layer, images.to(context.device))
            out.append(z[:, channel].flatten(1).amax(1).float().cpu())
    return torch.cat(out)


def top_max_references(context: Context, channel: int, n_ref: int) -> tuple[Tensor, Tensor]:
    """Ids and values of the ``n_ref`` fit images with the largest maximum activation of the
    channel (ties -> smaller index, as in the capture statistics)."""
    if n_ref > len(context.fit):
        raise InputError(f"n_ref={n_ref} exceeds the {len(context.fit)} images of the fit dataset; "
                         f"choose n_ref <= {len(context.fit)}")
    stats = context.stats
    if stats.top_max_ids.shape[1] >= n_ref:
        return stats.top_max_ids[channel, :n_ref].cpu().clone(), stats.top_max_values[channel, :n_ref].cpu().clone()
    values = max_activations(context, channel)
    order = torch.argsort(-values, stable=True)[:n_ref]
    return order, values[order]
