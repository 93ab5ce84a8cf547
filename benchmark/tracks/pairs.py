"""The pairs track (Hesse et al., CVPR-W 2025): channel + class pair, detected by the ARV
paper's tau/p + gamma rule on every (model, layer) the run studies (``max_pairs`` per
(model, layer)), or given in the config for one layer of ``model.name`` (e.g. the 20
published ResNet-50 pairs)."""
from __future__ import annotations

from benchmark.core.config import ConfigError, RunConfig
from benchmark.core.types import Context, Target
from benchmark.engine.environment import Environment, Subject
from benchmark.engine.relevance import detect_polysemantic_pairs
from benchmark.tracks.plan import TrackPlan


def pairs_track(env: Environment, config: RunConfig) -> TrackPlan:
    cfg = config.tracks.pairs
    builders = {"detected": _detected_pairs, "given": _given_pairs}
    if cfg.source not in builders:
        raise ConfigError(f"tracks.pairs.source must be one of {', '.join(builders)}, got {cfg.source!r}")
    subjects = env.subjects(cfg.layer) if cfg.source == "detected" else [Subject(config.model.name, env.layer(cfg.layer))]
    contexts: dict[Target, Context] = {}
    for subject in subjects:
        context = env.subject_context(subject)
        contexts.update({t: context for t in builders[cfg.source](context, config, env.candidate_p(context, cfg.p))})
    first = env.subject_context(subjects[0])
    return TrackPlan("pairs", "split", first, tuple(contexts), {"source": cfg.source}, contexts=contexts)


def _detected_pairs(context: Context, config: RunConfig, p: float) -> list[Target]:
    cfg = config.tracks.pairs
    records = detect_polysemantic_pairs(context.model, context.layer, context.stats, p=p, gamma=cfg.gamma,
                                       dataset=context.fit, batch_size=context.batch_size, device=context.device)
    chosen = sorted((r for r in records if r.polysemantic), key=lambda r: (r.cosine, r.channel))[: cfg.max_pairs or None]  # 0 = all
    return [Target(context.model_name, context.layer, r.channel, ((r.class_a,), (r.class_b,))) for r in chosen]


def _given_pairs(context: Context, config: RunConfig, _p: float) -> list[Target]:
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
