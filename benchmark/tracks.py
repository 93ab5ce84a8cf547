"""The four tracks of the benchmark (DESIGN.md "Tracks"): which targets each evaluates.

* ``planted``: channels made polysemantic on purpose with ground truth, functionally planted
  over layers and model seeds and filtered for validity (benchmark.planted_track);
* ``pairs``: channel + class pair, detected by the ARV paper's tau/p + gamma rule or given
  (e.g. the 20 published ResNet-50 pairs);
* ``layer``: every channel (or an even sample) of a layer, as PURE evaluates;
* ``detection``: (channel, class pair) candidates scored by each method's polysemanticity
  against WordNet similarity.

Each builder returns a :class:`TrackPlan`; ``TRACKS`` maps names to builders.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from benchmark.config import ConfigError, RunConfig
from benchmark.environment import Environment
from benchmark.relevance import candidate_pairs, detect_polysemantic_pairs
from benchmark.types import Context, Target


@dataclass(frozen=True)
class TrackPlan:
    """What one track evaluates: a context, its targets and how units are executed
    (``kind``: "split" = fit every method on every target and score split metrics;
    "detection" = score every method's polysemanticity on all targets at once).

    ``contexts`` gives a target its own context where it differs from ``context`` (the
    planted track: one planted model per model seed and layer); ``model_seeds`` the model
    seed of a target whose model is not the run's.
    """

    track: str
    kind: str
    context: Context
    targets: tuple[Target, ...]
    info: dict[str, Any] = field(default_factory=dict)
    contexts: Mapping[Target, Context] = field(default_factory=dict)
    model_seeds: Mapping[Target, int] = field(default_factory=dict)

    def context_of(self, target: Target) -> Context:
        return self.contexts.get(target, self.context)

    def model_seed_of(self, target: Target | None, default: int) -> int:
        return self.model_seeds.get(target, default) if target is not None else default


def wordnet_unrelated(classes, threshold: float) -> Callable[[int, int], bool]:
    """``unrelated(t1, t2)``: Wu-Palmer similarity of the classes' synsets below threshold."""
    from benchmark.wordnet import similarity

    def unrelated(t1: int, t2: int) -> bool:
        return similarity(classes[t1].synset, classes[t2].synset, "wup") < threshold

    return unrelated


def pairs_track(env: Environment, config: RunConfig) -> TrackPlan:
    cfg = config.tracks.pairs
    layer = env.layer(cfg.layer)
    context = env.context(layer)
    builders = {"detected": _detected_pairs, "given": _given_pairs}
    if cfg.source not in builders:
        raise ConfigError(f"tracks.pairs.source must be one of {', '.join(builders)}, got {cfg.source!r}")
    targets = builders[cfg.source](context, config)
    return TrackPlan("pairs", "split", context, tuple(targets), {"source": cfg.source})


def _detected_pairs(context: Context, config: RunConfig) -> list[Target]:
    cfg = config.tracks.pairs
    records = detect_polysemantic_pairs(context.model, context.layer, context.stats, p=cfg.p, gamma=cfg.gamma,
                                       dataset=context.fit, batch_size=context.batch_size, device=context.device)
    chosen = sorted((r for r in records if r.polysemantic), key=lambda r: (r.cosine, r.channel))[: cfg.max_pairs]
    return [Target(config.model.name, context.layer, r.channel, ((r.class_a,), (r.class_b,))) for r in chosen]


def _given_pairs(context: Context, config: RunConfig) -> list[Target]:
    targets = []
    for entry in config.tracks.pairs.pairs:
        if len(entry) != 3:
            raise ConfigError(f"tracks.pairs.pairs entries are [channel, [classes a], [classes b]], got {entry!r}")
        channel, a, b = entry
        if isinstance(channel, bool) or not isinstance(channel, int):
            raise ConfigError(f"tracks.pairs.pairs: the channel must be an integer, got {channel!r} in {entry!r}")
        if any(isinstance(c, bool) or not isinstance(c, int) for cs in (a, b)
               for c in (cs if isinstance(cs, (list, tuple)) else (cs,))):
            raise ConfigError(f"tracks.pairs.pairs: classes must be integer class indices, got {entry!r}")
        concepts = tuple(tuple(c) if isinstance(c, (list, tuple)) else (c,) for c in (a, b))
        for cls in (c for cs in concepts for c in cs):
            if not 0 <= int(cls) < context.fit.num_classes:
                raise ConfigError(f"class {cls} in tracks.pairs.pairs is out of range (0..{context.fit.num_classes - 1})")
        if not 0 <= int(channel) < context.stats.num_channels:
            raise ConfigError(f"channel {channel} in tracks.pairs.pairs is out of range (layer has {context.stats.num_channels})")
        targets.append(Target(config.model.name, context.layer, int(channel), concepts))
    return targets[: config.tracks.pairs.max_pairs] if config.tracks.pairs.max_pairs else targets


def layer_track(env: Environment, config: RunConfig) -> TrackPlan:
    cfg = config.tracks.layer
    context = env.context(env.layer(cfg.layer))
    total = context.stats.num_channels
    count = total if cfg.num_channels in (0, None) or cfg.num_channels >= total else cfg.num_channels
    channels = torch.linspace(0, total - 1, count).round().long().unique().tolist()
    targets = tuple(Target(config.model.name, context.layer, c) for c in channels)
    return TrackPlan("layer", "split", context, targets, {"channels": channels})


def detection_track(env: Environment, config: RunConfig) -> TrackPlan:
    cfg = config.tracks.detection
    context = env.context(env.layer(cfg.layer))
    candidates = candidate_pairs(context.stats, p=cfg.p)
    if cfg.max_pairs and len(candidates) > cfg.max_pairs:
        g = torch.Generator().manual_seed(config.seed)
        keep = sorted(torch.randperm(len(candidates), generator=g)[: cfg.max_pairs].tolist())
        candidates = [candidates[i] for i in keep]
    targets = tuple(Target(config.model.name, context.layer, c, ((a,), (b,))) for c, a, b in candidates)
    return TrackPlan("detection", "detection", context, targets, {"candidates": len(targets)})


from benchmark.planted_track import planted_track  # noqa: E402  (it builds TrackPlans)

TRACKS: dict[str, Callable[[Environment, RunConfig], TrackPlan]] = {
    "planted": planted_track,
    "pairs": pairs_track,
    "layer": layer_track,
    "detection": detection_track,
}
