"""Per-(method, target) activation traces kept for figures (density plots, recovery scatter).

A trace holds, on held-out images (those of the target's concepts, else the first
``max_images``): the spatially summed original channel (N,), the spatially summed virtual
neurons (N, k), the labels (N,), the planted parts (N, 2) where there is ground truth, and
the residual (N,) for surgery splits. The original channel and the planted parts are
computed once per target and image for all methods (a per-image memo per model).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmark.core.types import Split
from benchmark.engine.layers import channel_activation
from benchmark.engine.memo import ImageMemo
from benchmark.storage.cache import atomic_write

# the tracks whose traces the figures read (density plots of the first pairs target, recovery
# scatter of the first planted target): a run saves the traces of those first targets only
TRACED_TRACKS = ("pairs", "planted")


def evaluation_indices(split: Split, heldout, max_images: int = 512) -> torch.Tensor:
    concepts = split.concepts or split.target.concepts
    if concepts:
        idx = heldout.indices_of(sorted({c for cs in concepts for c in cs}))
    else:
        idx = torch.arange(len(heldout))
    return idx[:max_images]


MEMO_SECTION, MEMO_SIZE = "trace_maps", 8  # context.memo section: per-target maps of every method's trace


def _shared(context, objects: tuple, key: tuple, fn) -> ImageMemo:
    """A per-image memo of ``fn`` shared, through the run's memo, by every method's trace of
    the same target (the original channel and the planted parts do not depend on the
    method); ``objects`` are the live objects ``fn`` depends on (kept alive by the memo)."""
    return context.memo.get(MEMO_SECTION, (context.heldout, *objects), key, lambda: ImageMemo(fn), MEMO_SIZE)


def compute_trace(split: Split, context, max_images: int = 512) -> dict:
    idx = evaluation_indices(split, context.heldout, max_images)
    model = context.model
    truth = context.planted.get(split.target.channel)
    layer, channel = split.target.layer, split.target.channel
    original = _shared(context, (model,), ("orig", layer, channel),
                       lambda x: channel_activation(model, layer, channel, x))
    parts = None if truth is None else _shared(context, (truth,), ("parts",), truth.parts_fn)
    chunks: dict[str, list] = {"orig": [], "virtual": [], "parts": [], "residual": []}
    for start in range(0, len(idx), context.batch_size):
        images = context.heldout.images(idx[start:start + context.batch_size]).to(context.device)
        with torch.no_grad():
            chunks["orig"].append(original(images).sum((1, 2)))
            if parts is not None:
                chunks["parts"].append(parts(images).sum((2, 3)))
            residual = split.residual(images)
            if residual is not None:
                chunks["residual"].append(residual.sum((1, 2)))
        chunks["virtual"].append(split.activations(images).detach().sum((2, 3)))
    trace: dict[str, Any] = {k: torch.cat(v).cpu() for k, v in chunks.items() if v}
    trace["labels"] = context.heldout.labels[idx].clone()
    trace["meta"] = {"method": split.method, "target": split.target.key, "k": split.k,
                     "concepts": split.concepts or split.target.concepts}
    return trace


def save_trace(path: Path, split: Split, plan, context=None) -> Path:
    trace = compute_trace(split, context if context is not None else plan.context)
    trace["meta"]["track"] = plan.track
    return atomic_write(path, lambda p: torch.save(trace, p))


def load_trace(path: Path) -> dict:
    return torch.load(path, weights_only=False)
