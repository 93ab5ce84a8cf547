"""PURE crop boxes of a target's shared reference pool, computed once per (model, layer,
channel, pool) and cached on disk (cache kind ``pure_crop_boxes``).

The boxes (:func:`benchmark.engine.crops.pure_boxes`: LRP seeded at the channel's maximum position,
blur, 2% threshold) depend on the network and the pool only -- never on the method that
labels the pool -- so every method of a run, and every later run with a warm cache, reuses
them. Boxes rather than crops are stored: four integers per image, the crop is a slice.
"""
from __future__ import annotations

import torch
from torch import Tensor

from benchmark.core.types import Context
from benchmark.engine.crops import pure_boxes
from benchmark.storage.cache import model_fingerprint
from metrics._common import batches

MEMO_SECTION, MEMO_SIZE = 'crop_boxes', 8  # context.memo section: (model, held-out data) -> boxes of a pool


def _compute(context: Context, layer: str, channel: int, ids: Tensor, threshold: float) -> Tensor:
    out = []
    for images, _ in batches(context.heldout, ids, context.batch_size, context.device):
        out.append(pure_boxes(context.model, layer, channel, images, threshold=threshold,
                              batch_size=context.batch_size).cpu())
    return torch.cat(out) if out else torch.zeros(0, 4, dtype=torch.long)


def pool_boxes(context: Context, layer: str, channel: int, ids: Tensor, threshold: float) -> Tensor:
    """(len(ids), 4) long ``(top, bottom, left, right)`` boxes of the pool images ``ids`` of
    ``context.heldout`` (memoised in the process and, with ``context.cache``, on disk)."""
    key = (layer, int(channel), tuple(ids.tolist()), float(threshold))
    return context.memo.get(MEMO_SECTION, (context.model, context.heldout), key, lambda: _cached(context, layer, channel, ids, threshold),
                            MEMO_SIZE)


def _cached(context: Context, layer: str, channel: int, ids: Tensor, threshold: float) -> Tensor:
    compute = lambda: {"boxes": _compute(context, layer, channel, ids, threshold)}  # noqa: E731
    if context.cache is None:
        return compute()["boxes"]
    spec = {"model": model_fingerprint(context.model, context.memo), "dataset": context.heldout.fingerprint,
            "layer": layer, "channel": int(channel), "ids": [int(i) for i in ids], "threshold": float(threshold)}
    return context.cache.get_or_compute("pure_crop_boxes", spec, compute)["boxes"].long()
