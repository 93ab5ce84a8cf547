"""The planted track: functionally planted polysemantic channels over layers and model seeds.

For every model seed in ``tracks.planted.model_seeds`` (the world CNN retrained from that
seed on the same world data) and every layer in ``tracks.planted.layers``:

1. candidates: up to ``num_channels`` pairs of channels with WordNet-unrelated top classes
   whose merged class profile has those two classes on top
   (:func:`benchmark.planting.merge.choose_planting_pairs`, fit statistics only);
2. plain merge of every pair into one model copy (:func:`benchmark.planting.merge.plant`), the
   parts centred on their channels' mean fit response (so "active" means "above average");
3. functional step: the layers after the planted one are fine-tuned so the network uses
   the planted channels (:mod:`benchmark.planting.functional`; cached);
4. validity filter on held-out statistics of the tuned model (:mod:`benchmark.planting.validity`).

Accepted candidates become targets (``Target.model`` = ``"<model>@seed<s>"``, so targets of
different model seeds never share a key); each has its own context (the tuned model, its
fit statistics, the planted track's held-out images). ``info["candidates"]`` records every
candidate with its verdict, reasons, accuracies (original, merged, functional) and per
concept the mean response and relevance-filter share before and after the functional step.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any

from benchmark.core.config import ConfigError, RunConfig
from benchmark.core.types import Context, Target
from benchmark.engine.capture import CaptureSpec, cached_capture
from benchmark.engine.environment import Environment, _spread
from benchmark.planting.functional import FunctionalSchedule, cached_finetune
from benchmark.planting.merge import accuracy, choose_planting_pairs, mean_responses, plant
from benchmark.planting.validity import ValidityRule, assess, concept_measures
from benchmark.sources.datasets import ImageDataset, Subset
from benchmark.tracks.plan import TrackPlan, wordnet_unrelated


def planted_heldout(env: Environment, images: int) -> ImageDataset:
    """The held-out images of the planted track: all, or ``images`` spread evenly."""
    if not images or images >= len(env.heldout):
        return env.heldout
    return Subset(env.heldout, _spread(len(env.heldout), images))


def _schedule(config: RunConfig, model_seed: int) -> FunctionalSchedule:
    cfg = config.tracks.planted
    return FunctionalSchedule(steps=cfg.functional_steps, batch_size=cfg.functional_batch_size,
                              lr=cfg.functional_lr, dropout=cfg.functional_dropout,
                              seed=model_seed)  # part of the planted model: not the method seed


def _check(config: RunConfig, seeds: list[int], layers: list[str]) -> None:
    if len(set(seeds)) != len(seeds) or len(set(layers)) != len(layers):
        raise ConfigError(f"tracks.planted.model_seeds and .layers must not repeat entries: {seeds}, {layers}")
    if config.model.weights is not None and seeds != [config.seeds.model]:
        raise ConfigError("model.weights names one weights file; tracks.planted.model_seeds must then be unset "
                          f"(got {seeds})")
    if config.tracks.planted.num_channels < 1:
        raise ConfigError(f"tracks.planted.num_channels must be >= 1, got {config.tracks.planted.num_channels}")


def planted_track(env: Environment, config: RunConfig):
    cfg = config.tracks.planted
    seeds = [int(s) for s in cfg.model_seeds] if cfg.model_seeds is not None else [env.seeds.model]
    layers = [str(layer) for layer in cfg.layers] or [env.layer(cfg.layer)]
    _check(config, seeds, layers)
    heldout = planted_heldout(env, cfg.heldout_images)
    rule = ValidityRule(cfg.min_response, cfg.min_relevance_pass, cfg.min_part_share, n_ref=config.capture.top_k)
    unrelated = wordnet_unrelated(env.fit.classes, cfg.wordnet_threshold)
    spec = dict(top_k=config.capture.top_k, tau=config.capture.tau, batch_size=config.batch_size)
    candidates: list[dict[str, Any]] = []
    targets: list[Target] = []
    contexts: dict[Target, Context] = {}
    model_seeds: dict[Target, int] = {}
    accuracies: dict[str, dict[str, float]] = {}

    def heldout_stats(model, layer):
        return cached_capture(model, heldout, CaptureSpec(layer, **spec), cache=env.cache, device=env.device,
                              progress=env.progress)

    for seed in seeds:
        base = env.model if seed == env.seeds.model else env.load_model(seed)
        acc_original = accuracy(base, heldout, config.batch_size, env.device)
        for layer in layers:
            base_stats = env.context(layer, base).stats
            chosen = choose_planting_pairs(base_stats, cfg.num_channels, unrelated,
                                           max_profile_correlation=cfg.max_part_correlation)
            if not chosen:
                continue
            pairs = [p for p, _ in chosen]
            classes = [((ta,), (tb,)) for _, (ta, tb) in chosen]
            offsets = mean_responses(base, layer, base_stats, env.fit.images([0]).to(env.device))
            merged, truths = plant(base, layer, pairs, classes, offsets=offsets)
            tuned = cached_finetune(merged, layer, [a for a, _ in pairs], env.fit, _schedule(config, seed),
                                    cache=env.cache, device=env.device, progress=env.progress)
            group = {"original": acc_original,
                     "merged": accuracy(merged, heldout, config.batch_size, env.device),
                     "functional": accuracy(tuned, heldout, config.batch_size, env.device)}
            accuracies[f"seed{seed}/{layer}"] = {k: round(v, 4) for k, v in group.items()}
            merged_stats, tuned_stats = heldout_stats(merged, layer), heldout_stats(tuned, layer)
            context = dataclasses.replace(env.context(layer, tuned, truths), heldout=heldout)
            for (a, b), concepts in zip(pairs, classes):
                verdict = assess(truths[a], tuned_stats, context.stats, env.fit, rule, config.batch_size, env.device)
                before = concept_measures(merged_stats, a, concepts)
                record = {"model_seed": seed, "layer": layer, "channel": a, "source_channels": [a, b],
                          "classes": [list(c) for c in concepts],
                          **{f"accuracy_{k}": round(v, 4) for k, v in group.items()}, **verdict,
                          **{f"merged_{k}": round(v, 4) for k, v in before.items() if not k.startswith("images")}}
                candidates.append(record)
                if verdict["accepted"]:
                    target = Target(f"{config.model.name}@seed{seed}", layer, a, concepts=concepts)
                    targets.append(target)
                    contexts[target] = context
                    model_seeds[target] = seed
    info = {"candidates": candidates, "accepted": len(targets), "rejected": len(candidates) - len(targets),
            "model_seeds": seeds, "layers": layers, "heldout_images": len(heldout), "accuracy": accuracies,
            "validity_rule": dataclasses.asdict(rule), "schedule": dataclasses.asdict(_schedule(config, seeds[0]))}
    if not targets:
        examples = "; ".join(f"seed {c['model_seed']} {c['layer']}#{c['channel']}: {c['reasons'][0]}"
                             for c in candidates[:3])
        message = (f"no planted candidate passed the validity filter ({len(candidates)} tried"
                   f"{', e.g. ' + examples if examples else ''})")
        if cfg.required:
            raise ValueError(f"{message}; relax tracks.planted.min_* or plant in other layers "
                             "(or set tracks.planted.required = false to run the other tracks without it)")
        warnings.warn(f"planted track: {message}; the run goes on without planted targets "
                      "(tracks.planted.required = false; every candidate and its reasons are in run.json)",
                      stacklevel=2)
        info["skipped"] = message
        return TrackPlan("planted", "split", env.context(layers[0]), (), info)
    return TrackPlan("planted", "split", contexts[targets[0]], tuple(targets), info,
                     contexts=contexts, model_seeds=model_seeds)
