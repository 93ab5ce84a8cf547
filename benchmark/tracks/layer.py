"""The layer track (Dreyer et al., CVPR-W 2024): every channel of a layer, or an even sample,
of every (model, layer) the run studies."""
from __future__ import annotations

import torch

from benchmark.core.config import RunConfig
from benchmark.core.types import Context, Target
from benchmark.engine.environment import Environment
from benchmark.tracks.plan import TrackPlan


def layer_track(env: Environment, config: RunConfig) -> TrackPlan:
    cfg = config.tracks.layer
    contexts: dict[Target, Context] = {}
    sampled: dict[str, list[int]] = {}
    for subject in env.subjects(cfg.layer):
        context = env.subject_context(subject)
        total = context.stats.num_channels
        count = total if cfg.num_channels in (0, None) or cfg.num_channels >= total else cfg.num_channels
        channels = torch.linspace(0, total - 1, count).round().long().unique().tolist()
        sampled[f"{subject.model}/{subject.layer}"] = channels
        contexts.update({Target(subject.model, subject.layer, c): context for c in channels})
    first = env.subject_context(env.subjects(cfg.layer)[0])
    return TrackPlan("layer", "split", first, tuple(contexts), {"channels": sampled}, contexts=contexts)
