"""The shared reference pool of a target: ONE set of images per channel on which every method
is scored (planted-recovery ARI, embedding separation) and shown (the split cards of
:mod:`benchmark.engine.cards`), and each method's labelling of it.

* :func:`reference_pool`: the ``n`` held-out images (``context.heldout``) with the largest
  MAXIMUM spatial activation of the target channel in ``context.model`` (PURE's reference
  ranking, Dreyer et al. 2024, on the split PURE takes its references from: the validation
  split in the ImageNet protocol). One pass over the held-out data per (model, layer),
  memoised for all channels, methods and metrics of a track.
* :func:`pool_labels`: each pool image goes to the virtual neuron with the largest POSITIVE
  spatial sum ``sum_hw max(v_i, 0)`` (ties -> the lowest index). The same rule gives the
  planted truth's owner of an image (``methods/oracle.py``), so the oracle labels the pool
  exactly as the truth does; a split that cannot tell images apart (identity, duplicate)
  puts the whole pool into one group.

Why a shared pool: each method's own ``reference_ids`` differ (arv_surgery draws them from its
concepts' class images), so scoring each on its own pool compares different image sets and
lets labels leak into the score.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

from benchmark.core.types import Context, NotApplicable, Split
from benchmark.engine.layers import check_channel, eval_mode, layer_activations

MEMO_SECTION, MEMO_SIZE = 'heldout_max_activations', 4  # context.memo section: (model, held-out data) -> max activations of a layer


def batches(dataset, indices: Tensor, batch_size: int, device) -> Iterator[tuple[Tensor, Tensor]]:
    """(images, labels) of ``dataset[indices]`` in chunks of ``batch_size``, on ``device``
    (the one implementation: metrics import it through ``metrics._common``)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    idx = torch.as_tensor(indices, dtype=torch.long).flatten()
    for start in range(0, idx.numel(), batch_size):
        chunk = idx[start:start + batch_size]
        yield dataset.images(chunk).to(device), dataset.labels[chunk].to(device)


def heldout_max_activations(context: Context, layer: str) -> Tensor:
    """(N_heldout, C) maximum spatial activation of every channel of ``layer`` (memoised)."""
    return context.memo.get(MEMO_SECTION, (context.model, context.heldout), (layer, str(context.device)),
                     lambda: _max_activations(context, layer), MEMO_SIZE)


def _max_activations(context: Context, layer: str) -> Tensor:
    rows = []
    with torch.no_grad(), eval_mode(context.model):
        for images, _ in batches(context.heldout, torch.arange(len(context.heldout)), context.batch_size, context.device):
            z = layer_activations(context.model, layer, images)
            if z.dim() != 4:
                raise ValueError(f"layer {layer!r} outputs shape {tuple(z.shape)}; the pool needs (N, C, H, W) maps")
            rows.append(z.flatten(2).amax(-1).float().cpu())
    return torch.cat(rows)


def reference_pool(context: Context, layer: str, channel: int, n: int = 100) -> Tensor:
    """(min(n, N),) indices into ``context.heldout`` of the channel's top images by max activation."""
    if n < 2:
        raise ValueError(f"the pool needs n >= 2 images, got {n}")
    acts = heldout_max_activations(context, layer)
    check_channel(channel, acts.shape[1], layer)
    if acts.shape[0] < 2:
        raise NotApplicable(f"the held-out data has {acts.shape[0]} image(s); the pool needs >= 2")
    order = torch.sort(acts[:, channel], descending=True, stable=True).indices
    return order[: min(n, order.numel())].clone()


def positive_sums(fn, context: Context, ids: Tensor) -> Tensor:
    """(len(ids), k) positive spatial sums ``sum_hw max(fn(x), 0)`` on held-out images ``ids``."""
    out = []
    with torch.no_grad():
        for images, _ in batches(context.heldout, ids, context.batch_size, context.device):
            maps = fn(images)
            out.append(maps.clamp(min=0).flatten(-2).sum(-1).double().cpu())
    return torch.cat(out)


def pool_labels(split: Split, context: Context, ids: Tensor) -> Tensor:
    """(len(ids),) virtual neuron of each pool image: argmax of positive spatial sums."""
    if split.k == 1:
        return torch.zeros(ids.numel(), dtype=torch.long)
    return positive_sums(split.activations, context, ids).argmax(dim=1)
