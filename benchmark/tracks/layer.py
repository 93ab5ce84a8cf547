"""The layer track (Dreyer et al., CVPR-W 2024): every channel of a layer, or an even sample."""
from __future__ import annotations

import torch

from benchmark.core.config import RunConfig
from benchmark.core.types import Target
from benchmark.engine.environment import Environment
from benchmark.tracks.plan import TrackPlan


def layer_track(env: Environment, config: RunConfig) -> TrackPlan:
    cfg = config.tracks.layer
    context = env.context(env.layer(cfg.layer))
    total = context.stats.num_channels
    count = total if cfg.num_channels in (0, None) or cfg.num_channels >= total else cfg.num_channels
    channels = torch.linspace(0, total - 1, count).round().long().unique().tolist()
    targets = tuple(Target(config.model.name, context.layer, c) for c in channels)
    return TrackPlan("layer", "split", context, targets, {"channels": channels})
