"""The shared state of one run: the model, the fit/held-out data and one Context per layer.

Contexts are built lazily and memoised, so every track and method that studies the same
(model, layer) shares one capture pass (itself served from the cache across runs).
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from benchmark.core.config import ConfigError, RunConfig
from benchmark.core.errors import InputError, MissingFileError
from benchmark.core.memo import RunMemo
from benchmark.core.registry import DATASETS, MODELS
from benchmark.core.types import Context, PlantedTruth
from benchmark.engine.capture import CaptureSpec, cached_capture
from benchmark.sources.datasets import ImageDataset, Subset, without_unreadable
from benchmark.storage.cache import Cache


def _call_with_supported(factory, **kwargs):
    """Call a registry factory with the (non-None) keyword arguments it names."""
    params = inspect.signature(factory).parameters
    return factory(**{k: v for k, v in kwargs.items() if k in params and v is not None})


class Environment:
    """Model, datasets and contexts of a run (built once, shared by all tracks)."""

    def __init__(self, config: RunConfig, cache: Cache | None = None, progress: bool = True):
        self.config = config
        self.cache = cache or Cache()
        self.progress = progress
        self.memo = RunMemo()  # the run's memo: every Context built here shares it
        self.device = torch.device(config.device)
        data = config.data
        if data.root is not None and not Path(data.root).expanduser().exists():
            raise MissingFileError(f"data.root {data.root!r} does not exist (set it to the dataset folder)")
        dataset_factory = DATASETS.get(data.dataset)
        self.seeds = config.seeds
        self.skipped_images: dict[str, list[str]] = {}  # split -> unreadable files left out
        self.model: nn.Module = self.load_model(self.seeds.model)
        self.fit = self._load(dataset_factory, data.fit_split, data.fit_limit)
        self.heldout = self._load(dataset_factory, data.heldout_split, data.heldout_limit)
        self._contexts: dict[tuple, Context] = {}

    def load_model(self, model_seed: int) -> nn.Module:
        """The configured model for a model seed (world CNN: trained on the data seed's world)."""
        factory = MODELS.get(self.config.model.name)
        model = _call_with_supported(factory, weights=self.config.model.weights, seed=model_seed,
                                     data_seed=self.seeds.data, progress=self.progress).to(self.device).eval()
        if self.device.type == "cuda":  # faster convolutions; numerically the same model
            model = model.to(memory_format=torch.channels_last)
        return model

    def _load(self, factory, split: str, limit: int) -> ImageDataset:
        data = self.config.data
        dataset = _call_with_supported(factory, split=split, root=data.root, seed=self.seeds.data,
                                       image_size=data.image_size)
        if len(dataset) == 0:
            raise InputError(f"dataset {data.dataset!r} split {split!r} is empty")
        if limit and limit < len(dataset):
            dataset = Subset(dataset, _spread(len(dataset), limit))
        if data.skip_unreadable:  # one extra read of every image used
            dataset, skipped = without_unreadable(dataset, self.progress, f"check {split} images")
            if skipped:
                self.skipped_images[split] = skipped
        return dataset

    def layer(self, override: str | None = None) -> str:
        layer = override or self.config.model.layer or getattr(self.model, "default_layer", None)
        if not layer:
            raise ConfigError(f"model {self.config.model.name!r} has no default layer: set model.layer")
        return layer

    def context(self, layer: str, model: nn.Module | None = None,
                planted: Mapping[int, PlantedTruth] | None = None) -> Context:
        """The Context of ``layer`` for ``model`` (default: the run's model)."""
        model = model if model is not None else self.model
        key = (layer, id(model))
        if key not in self._contexts:
            spec = CaptureSpec(layer, top_k=self.config.capture.top_k, tau=self.config.capture.tau,
                               batch_size=self.config.batch_size,
                               sample_vectors=self.config.capture.sample_vectors, sample_seed=self.seeds.method)
            stats = cached_capture(model, self.fit, spec, cache=self.cache, device=self.device,
                                   num_workers=self.config.num_workers, progress=self.progress,
                                   model_name=self.config.model.name)
            self._contexts[key] = Context(
                model=model, model_name=self.config.model.name, layer=layer, fit=self.fit,
                heldout=self.heldout, stats=stats, device=self.device,
                batch_size=self.config.batch_size, seed=self.seeds.method, cache=self.cache,
                planted=dict(planted or {}), memo=self.memo,
            )
        return self._contexts[key]


def _spread(total: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``range(total)`` (deterministic, every class kept
    for class-interleaved datasets; ImageFolder-sorted data gets an even spread too)."""
    return torch.linspace(0, total - 1, count).round().long().unique().tolist()
