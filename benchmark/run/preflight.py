"""Checks that need no computation, run before a benchmark's set-up writes or computes
anything. First :func:`check_environment` (before any plug-in is imported): value ranges,
the data folder, WordNet, a writable cache and output folder. Then :func:`check_plugins`:
names of the model, dataset, embedders and feature-visualisation backends, embedders
suited to the dataset, CLIP weights present locally (or the network reachable). Each
failure is one line saying what is wrong and what is allowed.
"""
from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Iterable

from benchmark.core.config import ConfigError, RunConfig
from benchmark.core.errors import MissingFileError
from benchmark.core.registry import ARCHITECTURES, DATASETS, EMBEDDERS, FEATURE_VIS, MODELS
from benchmark.engine.environment import extra_model_entry
from benchmark.engine.layers import UnknownLayerError
from benchmark.storage.cache import Cache, check_writable

SEED_LIMIT = 2 ** 31  # numpy and torch generators accept seeds in [0, 2^31)
PAIR_SOURCES = ("detected", "given")  # benchmark.tracks.pairs


def check_ranges(config: RunConfig) -> None:
    """Counts that must not be negative, batch sizes that must be positive, seeds in range and
    model seeds listed once."""
    t = config.tracks
    rules = [("batch_size", config.batch_size, 1), ("num_workers", config.num_workers, 0),
             ("data.fit_limit", config.data.fit_limit, 0), ("data.heldout_limit", config.data.heldout_limit, 0),
             ("capture.top_k", config.capture.top_k, 1),
             ("capture.sample_vectors", config.capture.sample_vectors, 0), ("tracks.pairs.max_pairs", t.pairs.max_pairs, 0), ("tracks.layer.num_channels", t.layer.num_channels, 0),
             ("tracks.detection.max_pairs", t.detection.max_pairs, 0)]
    for key, value, least in rules:
        if value < least:
            meaning = " (0 = all)" if least == 0 and key.startswith("tracks.") else ""
            raise ConfigError(f"{key} must be >= {least}{meaning}, got {value}")
    for key, value in (("seed", config.seed), ("data.seed", config.data.seed), ("model.seed", config.model.seed),
                       ("method_seed", config.method_seed)):
        if value is not None and not 0 <= value < SEED_LIMIT:
            raise ConfigError(f"{key} must be in [0, 2^31), got {value}")
    if t.planted.model_seeds is not None and len(t.planted.model_seeds) == 0:
        raise ConfigError("tracks.planted.model_seeds is empty: name at least one seed (e.g. [0, 1, 2]) or leave it "
                          "unset to plant in the run's model seed")
    seeds = list(t.planted.model_seeds or ())
    if any(isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < SEED_LIMIT for s in seeds):
        raise ConfigError(f"tracks.planted.model_seeds must be integers in [0, 2^31), got {seeds}")
    if len(set(seeds)) != len(seeds):
        repeated = sorted({s for s in seeds if seeds.count(s) > 1})
        raise ConfigError(f"tracks.planted.model_seeds lists seed(s) {repeated} more than once: {seeds} "
                          "(each model seed is planted once)")
    if t.pairs.source not in PAIR_SOURCES:
        raise ConfigError(f"tracks.pairs.source must be one of {', '.join(PAIR_SOURCES)}, got {t.pairs.source!r}")
    if t.planted.enabled and t.planted.num_channels < 1:
        raise ConfigError("tracks.planted.num_channels must be >= 1 when the planted track is enabled "
                          "(to skip the track set tracks.planted.enabled = false)")
    if t.planted_within.enabled and t.planted_within.num_channels < 1:
        raise ConfigError("tracks.planted_within.num_channels must be >= 1 when the track is enabled "
                          "(to skip it set tracks.planted_within.enabled = false)")
    if not 0.0 <= config.capture.tau <= 1.0:
        raise ConfigError(f"capture.tau must be in [0, 1], got {config.capture.tau}")
    if config.device != "cpu" and not re.fullmatch(r"cuda(:\d+)?", config.device):
        raise ConfigError(f"device must be cpu, cuda or cuda:N, got {config.device!r}")
    if config.device != "cpu":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"device {config.device!r}: no CUDA device is available on this machine "
                              "(torch.cuda.is_available() is False); use --set device=cpu")
        index = int(config.device.split(":")[1]) if ":" in config.device else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device {config.device!r}: this machine has {torch.cuda.device_count()} CUDA "
                              f"device(s): cuda:0..cuda:{torch.cuda.device_count() - 1}")


def check_wordnet() -> None:
    """WordNet is findable (the planted and detection tracks and wordnet_gamma need it)."""
    from benchmark.sources import wordnet

    if wordnet.locate() is None:
        raise wordnet.WordNetMissingError(
            "WordNet (nltk corpus 'corpora/wordnet') was not found in " + ", ".join(wordnet.search_path())
            + "; provision it offline with `python -m benchmark.sources.wordnet_setup` (or online: "
            "python -c \"import nltk; nltk.download('wordnet')\")")


def _plugin_components(metrics: Iterable) -> tuple[list[tuple[str, dict, str]], list[tuple[str, str]]]:
    """(embedder name, arguments, owner) and (feature-vis backend, owner) that the
    configured metrics declare (``Metric.embedders`` / ``Metric.fvis_backends``)."""
    embedders, backends = [], []
    for p in metrics:
        embedders += [(name, dict(args), p.name) for name, args in p.instance.embedders()]
        backends += [(backend, p.name) for backend in p.instance.fvis_backends()]
    return embedders, backends


def check_environment(config: RunConfig, cache: Cache, output: Path | None = None) -> None:
    """Checks that need neither plug-ins nor computation (about a second from the command
    line): value ranges, the data folder, WordNet, a writable cache and output folder."""
    from benchmark.run.folder import check_writable as check_output

    check_ranges(config)
    if config.data.root is not None and not Path(config.data.root).expanduser().exists():
        raise MissingFileError(f"data.root {config.data.root!r} does not exist (set it to the dataset folder)")
    if config.evidence is not None and not (Path(config.evidence) / "meta_evaluation.csv").is_file():
        raise MissingFileError(f"evidence {config.evidence!r}: no meta_evaluation.csv there (a run folder with a "
                               "planted track, e.g. results; or --set evidence= to leave rule (b) unchecked)")
    check_writable(cache.root)
    if output is not None:
        check_output(Path(output))
    tracks = config.tracks
    if tracks.planted.enabled or tracks.detection.enabled or "wordnet_gamma" in config.metrics \
            or "all" in config.metrics:
        check_wordnet()  # imports nltk: last


def named_layers(config: RunConfig) -> list[tuple[str, str]]:
    """(config key, layer name) of every layer the config names explicitly."""
    t = config.tracks
    named = [("model.layer", config.model.layer), ("tracks.pairs.layer", t.pairs.layer),
             ("tracks.layer.layer", t.layer.layer), ("tracks.detection.layer", t.detection.layer),
             ("tracks.planted.layer", t.planted.layer)]
    named += [("tracks.planted.layers", str(layer)) for layer in t.planted.layers]
    named += [("model.layers", str(layer)) for layer in config.model.layers]
    return [(key, layer) for key, layer in named if layer]


def check_layers(config: RunConfig) -> None:
    """Every layer the config names exists in the model (and the planted ones are Conv2d),
    read from the model's untrained architecture where the zoo registers one, so a typo is
    refused in a second, before any training. Models without a registered architecture
    are checked when they are loaded."""
    from torch import nn

    from benchmark.engine.layers import get_layer

    if config.model.name not in ARCHITECTURES:
        return
    model = ARCHITECTURES.get(config.model.name)()
    for key, layer in named_layers(config):
        try:
            module = get_layer(model, layer)
        except UnknownLayerError as err:
            raise UnknownLayerError(f"{key}: {err}") from None
        convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        planting = config.tracks.planted.enabled or config.tracks.planted_within.enabled
        if key.startswith("tracks.planted") and planting and not isinstance(module, nn.Conv2d):
            raise ConfigError(f"{key}: planting merges two channels of a Conv2d; {layer!r} is a "
                              f"{type(module).__name__}. Conv2d layers: {', '.join(convs)}")
        shape = _output_shape(model, module, config)
        if shape is not None and len(shape) != 4:
            raise ConfigError(f"{key}: {layer!r} ({type(module).__name__}) outputs shape {tuple(shape)}; every track "
                              f"splits channels of (N, C, H, W) feature maps. Conv2d layers: {', '.join(convs)}")


def _output_shape(model, module, config: RunConfig):
    """The output shape of ``module`` on one blank image at the data's size (32 px for the
    synthetic world, else ``data.image_size`` or 224); None if the blank image does not pass."""
    import torch

    size = config.data.image_size or (32 if config.data.dataset == "synthetic_world" else 224)
    seen: list = []
    handle = module.register_forward_hook(lambda _m, _i, out: seen.append(tuple(out.shape)))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, size, size))
    except (RuntimeError, ValueError):  # another input size: the layer is checked when the model loads
        return None
    finally:
        handle.remove()
    return seen[0] if seen else None


def check_plugins(config: RunConfig, metrics: Iterable = ()) -> None:
    """Names of the model, dataset, embedders and feature-visualisation backends; the layers
    the config names; CLIP weights present (or the network reachable); embedders suited to
    the dataset."""
    MODELS.get(config.model.name)
    for entry in config.model.extra:  # names and layer lists (layers are checked when the model loads)
        extra_model_entry(entry)
    check_layers(config)
    DATASETS.get(config.data.dataset)
    embedders, backends = _plugin_components(metrics)
    if config.figures.enabled:
        backends.append((config.figures.fvis_backend, "figures.fvis_backend"))
    for backend, owner in backends:
        FEATURE_VIS.get(backend)
    for name, args, owner in embedders:
        cls = EMBEDDERS.get(name)
        domain = cls.datasets
        if domain is not None and config.data.dataset not in domain:
            raise ConfigError(f"embedder {name!r} of {owner} only embeds {', '.join(domain)} images, not "
                              f"{config.data.dataset!r}: set metric_params.{owner}.embedder (e.g. \"open_clip\")")
        cls(**args).check_weights()


_SIMPLE = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def check_param_types(cls: type, kwargs: dict, where: str) -> None:
    """Parameters of simple declared types (int, float, bool, str, optionally None) must
    have that type: ``k="two"`` is a ConfigError naming the parameter, not a TypeError
    from deep inside the plug-in."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # unresolvable annotations: leave the checks to the plug-in
        return
    for key, value in kwargs.items():
        options = [a for a in (typing.get_args(hints.get(key)) or (hints.get(key),)) if a is not type(None)]
        if value is None and len(options) < len(typing.get_args(hints.get(key)) or (0,)):
            continue  # None where None is allowed
        if len(options) != 1 or options[0] not in _SIMPLE:
            continue
        kind = options[0]
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise ConfigError(f"parameter {key} of {where} must be {_SIMPLE[kind]}, got {value!r}")
