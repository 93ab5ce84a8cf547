"""The detection track: (channel, class pair) candidates of the ARV paper's tau/p rule, scored
by each method's polysemanticity against the WordNet similarity of the classes."""
from __future__ import annotations

import torch

from benchmark.core.config import RunConfig
from benchmark.core.types import Target
from benchmark.engine.environment import Environment
from benchmark.engine.relevance import candidate_pairs
from benchmark.tracks.plan import TrackPlan


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
