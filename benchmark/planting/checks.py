"""The planted track's validity checks, computed once and kept in the cache (kind
``planting_checks``): the held-out accuracy of a network (original, merged, fine-tuned) and
the part shares of a planted channel's top fit references
(:func:`benchmark.planting.validity.part_shares`).

Both are pure functions of the weights, the images and the settings, so they are keyed by
the model's weight fingerprint, the dataset's fingerprint and the settings (and, as every
cache kind, by the code that computes them). They run on one intra-op thread
(:func:`benchmark.core.threads.single_threaded`), so an entry stored by a worker process of
the planted track's prefetch (:func:`benchmark.tracks.planted._prefetch_trainings`) holds the
value the parent would compute; a warm run reads them instead of running the network on the
held-out images again.
"""
from __future__ import annotations

import hashlib

import torch
from torch import Tensor, nn

from benchmark.core.threads import single_threaded
from benchmark.core.types import PlantedTruth
from benchmark.engine.layer_stats import LayerStats
from benchmark.planting.merge import accuracy
from benchmark.planting.validity import part_shares
from benchmark.sources.datasets import ImageDataset
from benchmark.storage.cache import Cache, model_fingerprint

KIND = "planting_checks"


def cached_accuracy(model: nn.Module, dataset: ImageDataset, batch_size: int, device: torch.device | str,
                    cache: Cache | None) -> float:
    """Top-1 accuracy of ``model`` on ``dataset`` (:func:`benchmark.planting.merge.accuracy`)."""
    def compute() -> dict[str, Tensor]:
        with single_threaded():
            return {"accuracy": torch.tensor([accuracy(model, dataset, batch_size, str(device))], dtype=torch.float64)}

    if cache is None:
        return float(compute()["accuracy"].item())
    spec = {"check": "accuracy", "model": model_fingerprint(model), "dataset": dataset.fingerprint,
            "batch_size": int(batch_size)}
    return float(cache.get_or_compute(KIND, spec, compute)["accuracy"].item())


def cached_part_shares(truth: PlantedTruth, planted: nn.Module, fit_stats: LayerStats, fit: ImageDataset, n_ref: int,
                       batch_size: int, device: torch.device | str, cache: Cache | None) -> dict[str, float]:
    """``part_share_p{q}`` of ``truth`` (a channel planted into ``planted``, whose layer input
    its parts are computed from) on its top ``n_ref`` fit references."""
    def compute() -> dict[str, Tensor]:
        with single_threaded():
            shares = part_shares(truth, fit_stats, fit, n_ref, batch_size, device)
        return {k: torch.tensor([v], dtype=torch.float64) for k, v in shares.items()}

    if cache is None:
        found = compute()
    else:
        ids = fit_stats.top_max_ids[truth.channel, :n_ref].contiguous()
        spec = {"check": "part_shares", "model": model_fingerprint(planted), "layer": truth.layer,
                "channels": [int(c) for c in truth.source_channels], "dataset": fit.fingerprint,
                "filters": _digest(truth.part_filters),
                "references": _digest(ids),
                "batch_size": int(batch_size)}
        found = cache.get_or_compute(KIND, spec, compute)
    return {k: float(v.item()) for k, v in sorted(found.items())}


def _digest(t: Tensor | None) -> str:
    if t is None:
        return ""
    return hashlib.blake2b(t.detach().cpu().contiguous().numpy().tobytes(), digest_size=16).hexdigest()
