"""The shared state of one run: the subject models, the fit/held-out data and one Context
per (model, layer).

A run studies ``model.name`` at ``model.layers`` (or ``model.layer``) and every model of
``model.extra`` at its own layers: each (model, layer) is a :class:`Subject`. Contexts are
built lazily and memoised, so every track and method that studies the same (model, layer)
shares one capture pass (itself served from the cache across runs). With
``capture.important_per_image`` set, each subject's tau is calibrated on the fit split first
(:mod:`benchmark.engine.tau_calibration`; cached, recorded in ``calibrations``).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
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
from benchmark.engine.tau_calibration import calibrate_p, calibrate_tau
from benchmark.sources.datasets import ImageDataset, Subset, without_unreadable
from benchmark.storage.cache import Cache, model_fingerprint


def _call_with_supported(factory, **kwargs):
    """Call a registry factory with the (non-None) keyword arguments it names."""
    params = inspect.signature(factory).parameters
    return factory(**{k: v for k, v in kwargs.items() if k in params and v is not None})


@dataclass(frozen=True)
class Subject:
    """One (model, layer) a run studies; ``model`` is a registered model name."""

    model: str
    layer: str


class Environment:
    """Model, datasets and contexts of a run (built once, shared by all tracks)."""

    def __init__(self, config: RunConfig, cache: Cache | None = None, progress: bool = True, workers: int = 1):
        self.config = config
        self.cache = cache or Cache()
        self.progress = progress
        self.workers = workers  # processes the planted track may train in (the run's --workers)
        self.memo = RunMemo()  # the run's memo: every Context built here shares it
        self.device = torch.device(config.device)
        data = config.data
        if data.root is not None and not Path(data.root).expanduser().exists():
            raise MissingFileError(f"data.root {data.root!r} does not exist (set it to the dataset folder)")
        dataset_factory = DATASETS.get(data.dataset)
        self.seeds = config.seeds
        self.skipped_images: dict[str, list[str]] = {}  # split -> unreadable files left out
        self.model: nn.Module = self.load_model(self.seeds.model)
        self.models: dict[str, nn.Module] = {config.model.name: self.model}
        self._extra_layers: dict[str, list[str]] = {}
        self._extra_planted: dict[str, list[str]] = {}
        for entry in config.model.extra:
            name, layers = extra_model_entry(entry)
            if name in self.models:
                raise ConfigError(f"model.extra: {name!r} is listed twice (or is model.name)")
            self.models[name] = self.load_model(self.seeds.model, name)
            self._extra_layers[name] = layers
            self._extra_planted[name] = extra_planted_layers(entry) or layers
        self.calibrations: dict[str, dict[str, float]] = {}  # "<model>/<layer>" -> calibrated tau and its figures
        self.fit = self._load(dataset_factory, data.fit_split, data.fit_limit)
        self.heldout = self._load(dataset_factory, data.heldout_split, data.heldout_limit)
        self._contexts: dict[tuple, Context] = {}

    def load_model(self, model_seed: int, name: str | None = None) -> nn.Module:
        """The configured model (or model ``name``) for a model seed (world CNN: trained on the
        data seed's world)."""
        factory = MODELS.get(name or self.config.model.name)
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

    def subjects(self, layer: str | None = None) -> list[Subject]:
        """What a track studies: ``[model.name at layer]`` when the track names a layer, else
        every (model, layer) of the run (``model.layers`` or ``[model.layer]``, then each
        ``model.extra`` model at its layers)."""
        name = self.config.model.name
        if layer:
            return [Subject(name, layer)]
        own = [str(x) for x in self.config.model.layers] or [self.layer()]
        return [Subject(name, x) for x in own] + [Subject(m, x) for m, layers in self._extra_layers.items()
                                                   for x in layers]

    def planted_layers(self, name: str) -> list[str]:
        """The layers the planted tracks plant in for ``model.extra`` model ``name``."""
        return list(self._extra_planted[name])

    def subject_context(self, subject: Subject) -> Context:
        return self.context(subject.layer, self.models[subject.model], model_name=subject.model)

    def tau(self, model: nn.Module, layer: str, model_name: str) -> float:
        """The capture tau of (model, layer): ``capture.tau``, or calibrated on the fit split,
        once per (model name, layer): the planted track's merged and fine-tuned copies of a
        model keep the tau calibrated on the original network (the first one asked)."""
        cfg = self.config.capture
        m = cfg.important_per_image
        if m is None:
            return cfg.tau
        where = f"{model_name}/{layer}"
        if where not in self.calibrations:
            spec = {"model": model_fingerprint(model), "layer": layer, "dataset": self.fit.fingerprint,
                    "important_per_image": m, "images": cfg.calibration_images}
            tensors = self.cache.get_or_compute("tau_calibration", spec, lambda: {
                k: torch.tensor([v], dtype=torch.float64) for k, v in calibrate_tau(
                    model, layer, self.fit, m, cfg.calibration_images, self.config.batch_size, self.device).items()})
            self.calibrations[where] = {k: float(v.item()) for k, v in tensors.items()}
        return self.calibrations[where]["tau"]

    def candidate_p(self, context: Context, p: float) -> float:
        """The class share p of the candidate rule at ``context``: ``p`` as given, or calibrated
        from the fit statistics (``capture.relevant_per_class``; recorded in ``calibrations``)."""
        r = self.config.capture.relevant_per_class
        if r is None:
            return p
        value = calibrate_p(context.stats, r)
        record = self.calibrations.setdefault(f"{context.model_name}/{context.layer}", {})
        record.setdefault("p", value)  # the first (the original network's, see tau)
        record.setdefault("relevant_per_class", float(r))
        return record["p"]

    def context(self, layer: str, model: nn.Module | None = None,
                planted: Mapping[int, PlantedTruth] | None = None, model_name: str | None = None) -> Context:
        """The Context of ``layer`` for ``model`` (default: the run's model; ``model_name``
        names it, default ``model.name``)."""
        model = model if model is not None else self.model
        name = model_name or self.config.model.name
        key = (layer, id(model))
        if key not in self._contexts:
            spec = CaptureSpec(layer, top_k=self.config.capture.top_k, tau=self.tau(model, layer, name),
                               batch_size=self.config.batch_size,
                               sample_vectors=self.config.capture.sample_vectors, sample_seed=self.seeds.method)
            stats = cached_capture(model, self.fit, spec, cache=self.cache, device=self.device,
                                   num_workers=self.config.num_workers, progress=self.progress,
                                   model_name=name)
            self._contexts[key] = Context(
                model=model, model_name=name, layer=layer, fit=self.fit,
                heldout=self.heldout, stats=stats, device=self.device,
                batch_size=self.config.batch_size, seed=self.seeds.method, cache=self.cache,
                planted=dict(planted or {}), memo=self.memo,
            )
        return self._contexts[key]


def extra_model_entry(entry) -> tuple[str, list[str]]:
    """(name, layers) of one ``model.extra`` entry, checked (``planted_layers`` too:
    :func:`extra_planted_layers`)."""
    if not isinstance(entry, Mapping) or set(entry) - {"name", "layers", "planted_layers"} or "name" not in entry:
        raise ConfigError(f"model.extra entries are tables {{name = \"<model>\", layers = [\"<layer>\", ...]}} "
                          f"(optionally planted_layers = [...]), got {entry!r}")
    MODELS.get(str(entry["name"]))  # an unknown name lists the registered models
    layers = _layer_list(entry, "layers")
    extra_planted_layers(entry)
    return str(entry["name"]), layers


def extra_planted_layers(entry) -> list[str] | None:
    """The layers the planted tracks plant in for one ``model.extra`` entry: its
    ``planted_layers`` (as ``tracks.planted.layers`` for the run's own model), or None = its
    ``layers``."""
    return _layer_list(entry, "planted_layers") if "planted_layers" in entry else None


def _layer_list(entry: Mapping, key: str) -> list[str]:
    layers = entry.get(key, ())
    if isinstance(layers, str) or not layers or not all(isinstance(x, str) for x in layers):
        raise ConfigError(f"model.extra {entry['name']!r}: {key} must be a non-empty list of layer names, got {layers!r}")
    return [str(x) for x in layers]


def _spread(total: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``range(total)`` (deterministic, every class kept
    for class-interleaved datasets; ImageFolder-sorted data gets an even spread too)."""
    return torch.linspace(0, total - 1, count).round().long().unique().tolist()
