"""Per-(method, target) activation traces kept for figures (density plots, recovery scatter).

A trace holds, on held-out images (those of the target's concepts, else the first
``max_images``): the spatially summed original channel (N,), the spatially summed virtual
neurons (N, k), the labels (N,), the planted parts (N, 2) where there is ground truth, and
the residual (N,) for surgery splits. The original channel and the planted parts are
computed once per target and image for all methods (a per-image memo per model).

Run folders are shared (results/ is committed; a reader downloads someone's run to re-render
its figures), so a trace file is plain data that cannot run code when read: a safetensors
file of its tensors with its metadata (method, target, k, concepts, track) as JSON in the
file's header. Anything else in ``traces/`` (a pickle, a truncated file) is refused with a
:class:`TraceError` naming the file; nothing is unpickled.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from benchmark.core.errors import PolysemyError
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


SUFFIX = ".safetensors"


class TraceError(PolysemyError, ValueError):
    """A file in a run folder's traces/ that is not a trace this package wrote."""


def save_trace(path: Path, split: Split, plan, context=None) -> Path:
    """Write the trace of ``split`` as safetensors (tensors) + JSON metadata; ``path`` must
    end in ``.safetensors``."""
    from safetensors.torch import save_file

    if Path(path).suffix != SUFFIX:
        raise ValueError(f"a trace file ends in {SUFFIX}, got {path}")
    trace = compute_trace(split, context if context is not None else plan.context)
    meta = {**trace.pop("meta"), "track": plan.track}
    tensors = {name: value.contiguous() for name, value in trace.items()}
    header = {"polysemy_trace": "1", "meta": json.dumps(meta)}
    return atomic_write(path, lambda p: save_file(tensors, str(p), metadata=header))


def load_trace(path: Path) -> dict:
    """The trace at ``path`` (tensors and ``meta``); a TraceError for any other file."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
        if header.get("polysemy_trace") != "1" or "meta" not in header:
            raise TraceError(f"{path} is not a polysemy-bench trace (its header has no trace metadata)")
        trace: dict[str, Any] = dict(load_file(str(path)))
        meta = json.loads(header["meta"])
    except (SafetensorError, OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TraceError(f"{path} is not a readable trace file ({err}); traces are safetensors files, "
                         "never pickles: delete it or rerun the run") from None
    if meta.get("concepts") is not None:
        meta["concepts"] = tuple(tuple(int(c) for c in cs) for cs in meta["concepts"])
    trace["meta"] = meta
    return trace
