"""The detection track: (channel, class pair) candidates of the ARV paper's tau/p rule on every
(model, layer) the run studies, scored by each method's polysemanticity against the WordNet
similarity of the classes. ``max_pairs`` caps the candidates per (model, layer)."""
from __future__ import annotations

import torch

from benchmark.core.config import RunConfig
from benchmark.core.types import Context, Target
from benchmark.engine.environment import Environment
from benchmark.engine.relevance import candidate_pairs
from benchmark.tracks.plan import TrackPlan


def detection_track(env: Environment, config: RunConfig) -> TrackPlan:
    cfg = config.tracks.detection
    contexts: dict[Target, Context] = {}
    counts: dict[str, int] = {}
    for subject in env.subjects(cfg.layer):
        context = env.subject_context(subject)
        candidates = candidate_pairs(context.stats, p=env.candidate_p(context, cfg.p))
        if cfg.max_pairs and len(candidates) > cfg.max_pairs:
            g = torch.Generator().manual_seed(config.seed)
            keep = sorted(torch.randperm(len(candidates), generator=g)[: cfg.max_pairs].tolist())
            candidates = [candidates[i] for i in keep]
        counts[f"{subject.model}/{subject.layer}"] = len(candidates)
        contexts.update({Target(subject.model, subject.layer, c, ((a,), (b,))): context for c, a, b in candidates})
    first = env.subject_context(env.subjects(cfg.layer)[0])
    return TrackPlan("detection", "detection", first, tuple(contexts), {"candidates": sum(counts.values()),
                                                                        "candidates_per_layer": counts},
                     contexts=contexts)
