"""Per-image memo of activation functions: work done twice in a run is done once.

Within one unit of a run (a method's split of one target) the metrics and the figure
traces each evaluate the split's virtual neurons and residual on the same held-out images
(often as different sub-batches: a metric keeps only the images it filters). :class:`ImageMemo`
wraps such a function ``fn(images) -> (N, ...)`` and remembers its output image by image:
a call computes ``fn`` only on the images it has not seen and assembles the rest from the
memo. Images are recognised by content (a BLAKE2b digest of each image's bytes, shape and
dtype), never by object identity, so sub-batches and copies hit.

Only calls without autograd are memoised (feature visualisation differentiates through
the split and bypasses the memo). ``fn`` must treat the images of a batch independently
(a model in eval mode does).

The other memo of a run, for values computed for live objects (reference pool, crop boxes,
original channel, planted parts), is :class:`benchmark.core.memo.RunMemo`, owned by the
run's Environment and handed to plug-ins as ``context.memo``.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Callable

import torch
from torch import Tensor

from benchmark.core.types import Split


class ImageMemo:
    """``fn`` with a per-image memo (see module docstring); ``hits``/``misses`` count images."""

    def __init__(self, fn: Callable[[Tensor], Tensor]):
        self.fn = fn
        self.store: dict[tuple, Tensor] = {}  # image digest -> output row
        self.hits = self.misses = 0

    @staticmethod
    def _keys(images: Tensor) -> list[tuple]:
        host = images.detach().contiguous().cpu()
        head = (tuple(host.shape[1:]), str(host.dtype))
        return [head + (hashlib.blake2b(row.numpy().tobytes(), digest_size=16).digest(),) for row in host]

    def __call__(self, images: Tensor) -> Tensor:
        if torch.is_grad_enabled() and images.requires_grad:
            return self.fn(images)
        keys = self._keys(images)
        rows: list[Tensor | None] = []
        for key in keys:
            rows.append(self.store.get(key))
        missing = [n for n, r in enumerate(rows) if r is None]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            out = self.fn(images if len(missing) == len(keys) else images[missing])
            if out.requires_grad:  # a graph is attached (grad mode on): do not keep it
                if len(missing) == len(keys):
                    return out
                out = out.detach()
            for j, n in enumerate(missing):
                rows[n] = out[j]
                self.store[keys[n]] = out[j]
        return torch.stack(rows)  # type: ignore[arg-type]


def memoized(split: Split) -> Split:
    """A copy of ``split`` whose virtual and residual functions share per-image memos."""
    residual = None if split.residual_fn is None else ImageMemo(split.residual_fn)
    return dataclasses.replace(split, virtual_fn=ImageMemo(split.virtual_fn), residual_fn=residual)
