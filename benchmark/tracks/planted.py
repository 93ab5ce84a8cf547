"""The planted track: functionally planted polysemantic channels over layers and model seeds.

For every model seed in ``tracks.planted.model_seeds`` (the world CNN retrained from that
seed on the same world data) and every layer in ``tracks.planted.layers`` (default: the
layers the run studies), and for every ``model.extra`` model at its ``planted_layers`` (default:
its ``layers``):

1. candidates: up to ``num_channels`` pairs of channels with WordNet-unrelated top classes
   whose merged class profile has those two classes on top
   (:func:`benchmark.planting.merge.choose_planting_pairs`, fit statistics only);
2. plain merge of every pair into one model copy (:func:`benchmark.planting.merge.plant`), the
   parts centred on their channels' mean fit response (so "active" means "above average");
3. functional step: the layers after the planted one are fine-tuned so the network uses
   the planted channels (:mod:`benchmark.planting.functional`; cached);
4. validity filter on held-out statistics of the tuned model (:mod:`benchmark.planting.validity`).

With ``tracks.planted_within`` enabled, ``num_channels`` WITHIN-class pairs per (model seed,
layer) are planted into the same models (:func:`benchmark.planting.merge.choose_within_class_pairs`:
two channels selective to the same class, whose top references overlap least); both parts
then serve one class, so a gate by the label cannot assign the images. They form the track
``planted_within`` (reported apart from the between-class ``planted`` track); the two
builders share one planting (memoised in the run's memo).

Accepted candidates become targets (``Target.model`` = ``"<model>@seed<s>"``, so targets of
different model seeds never share a key); each has its own context (the tuned model, its
fit statistics, the planted track's held-out images). ``info["candidates"]`` records every
candidate with its verdict, reasons, accuracies (original, merged, functional) and per
concept the mean response and relevance-filter share before and after the functional step.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any

from benchmark.core.config import ConfigError, RunConfig
from benchmark.core.types import Context, Target
from benchmark.engine.capture import CaptureSpec, cached_capture
from benchmark.engine.environment import Environment, _spread
from benchmark.planting.checks import cached_accuracy, cached_part_shares
from benchmark.planting.functional import FunctionalSchedule, cached_finetune
from benchmark.planting.merge import choose_planting_pairs, choose_within_class_pairs, mean_responses, plant
from benchmark.planting.validity import ValidityRule, assess, concept_measures
from benchmark.sources.datasets import ImageDataset, Subset
from benchmark.storage.cache import Cache
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


def planted_track(env: Environment, config: RunConfig) -> TrackPlan:
    """The between-class planted track."""
    return _plans(env, config)["planted"]


def planted_within_track(env: Environment, config: RunConfig) -> TrackPlan:
    """The within-class planted track (both parts serve one class)."""
    return _plans(env, config)["planted_within"]


def _plans(env: Environment, config: RunConfig) -> dict[str, TrackPlan]:
    return env.memo.get("planted_plans", (env, config), (), lambda: _plant_all(env, config), 1)


def _plant_all(env: Environment, config: RunConfig) -> dict[str, TrackPlan]:
    cfg = config.tracks.planted
    kinds = [k for k, on in (("planted", cfg.enabled), ("planted_within", config.tracks.planted_within.enabled)) if on]
    seeds = [int(s) for s in cfg.model_seeds] if cfg.model_seeds is not None else [env.seeds.model]
    primary = config.model.name
    own = [str(layer) for layer in cfg.layers] or ([cfg.layer] if cfg.layer else
                                                   [s.layer for s in env.subjects() if s.model == primary])
    _check(config, seeds, own)
    # (model, seed, layers): the run's model at every model seed, each model.extra model at the run's seed
    plantings = [(primary, seed, own) for seed in seeds]
    plantings += [(name, env.seeds.model, env.planted_layers(name)) for name in env.models if name != primary]
    layers = list(dict.fromkeys(layer for _, _, ls in plantings for layer in ls))
    heldout = planted_heldout(env, cfg.heldout_images)
    rule = ValidityRule(cfg.min_response, cfg.min_relevance_pass, cfg.min_part_share, cfg.min_accuracy_kept,
                        n_ref=config.capture.top_k)
    unrelated = wordnet_unrelated(env.fit.classes, cfg.wordnet_threshold)
    spec = dict(top_k=config.capture.top_k, batch_size=config.batch_size)
    shared = _Shared(kinds, heldout, rule, unrelated, spec, primary)
    _prefetch_trainings(env, config, shared, plantings)
    candidates: list[dict[str, Any]] = []
    targets: list[tuple[str, Target]] = []
    contexts: dict[Target, Context] = {}
    model_seeds: dict[Target, int] = {}
    accuracies: dict[str, dict[str, float]] = {}
    for name, seed, model_layers in plantings:
        for where, group, records, accepted in _plant_model(env, config, shared, name, seed, model_layers):
            accuracies[where] = {k: round(v, 4) for k, v in group.items()}
            candidates += records
            for kind, target, context in accepted:
                targets.append((kind, target))
                contexts[target] = context
                model_seeds[target] = seed
    common = {"model_seeds": seeds, "layers": layers, "heldout_images": len(heldout), "accuracy": accuracies,
              "validity_rule": dataclasses.asdict(rule), "schedule": dataclasses.asdict(_schedule(config, seeds[0]))}
    plans = {}
    for kind in kinds:
        mine = [c for c in candidates if c["track"] == kind]
        accepted = tuple(t for k, t in targets if k == kind)
        required = cfg.required if kind == "planted" else False
        plans[kind] = _plan(env, kind, mine, accepted, contexts, model_seeds, layers, required,
                            {"candidates": mine, "accepted": len(accepted), "rejected": len(mine) - len(accepted),
                             **common})
    return plans


@dataclass(frozen=True)
class _Shared:
    """What every (model, seed) planting of a run shares."""

    kinds: list[str]
    heldout: ImageDataset
    rule: ValidityRule
    unrelated: Any
    spec: dict
    primary: str


def _plant_model(env: Environment, config: RunConfig, shared: _Shared, name: str, seed: int,
                 model_layers: list[str]) -> list[tuple]:
    """Candidates, planting, fine-tuning and validity filter of one (model, seed) at its layers:
    per layer ``(where, accuracies, candidate records, [(kind, target, context) accepted])``."""
    cfg = config.tracks.planted
    heldout, kinds = shared.heldout, shared.kinds

    def heldout_stats(model, layer):  # tau: the fit split's (calibrated where configured)
        return cached_capture(model, heldout, CaptureSpec(layer, tau=env.tau(model, layer, name), **shared.spec),
                              cache=env.cache, device=env.device, progress=env.progress)

    def acc(model):
        return cached_accuracy(model, heldout, config.batch_size, env.device, env.cache)

    base = env.models[name] if seed == env.seeds.model else env.load_model(seed, name)
    acc_original = acc(base)
    out = []
    for layer in model_layers:
        base_stats = env.context(layer, base, model_name=name).stats
        chosen = [("planted", c) for c in choose_planting_pairs(
            base_stats, cfg.num_channels, shared.unrelated, max_profile_correlation=cfg.max_part_correlation,
            min_relevance=cfg.min_candidate_relevance)
            if "planted" in kinds]
        if "planted_within" in kinds:
            used = {ch for _, (pair, _) in chosen for ch in pair}
            chosen += [("planted_within", c) for c in choose_within_class_pairs(
                base_stats, config.tracks.planted_within.num_channels, exclude=used)]
        if not chosen:
            continue
        pairs = [p for _, (p, _) in chosen]
        classes = [((ta,), (tb,)) for _, (_, (ta, tb)) in chosen]
        offsets = mean_responses(base, layer, base_stats, env.fit.images([0]).to(env.device))
        merged, truths = plant(base, layer, pairs, classes, offsets=offsets)
        tuned = cached_finetune(merged, layer, [a for a, _ in pairs], env.fit, _schedule(config, seed),
                                cache=env.cache, device=env.device, progress=env.progress)
        group = {"original": acc_original, "merged": acc(merged), "functional": acc(tuned)}
        where = f"seed{seed}/{layer}" if name == shared.primary else f"{name}@seed{seed}/{layer}"
        merged_stats, tuned_stats = heldout_stats(merged, layer), heldout_stats(tuned, layer)
        context = dataclasses.replace(env.context(layer, tuned, truths, model_name=name), heldout=heldout)
        records, accepted = [], []
        for (kind, _), (a, b), concepts in zip(chosen, pairs, classes):
            kept = group["functional"] / group["original"] if group["original"] > 0 else 1.0
            shares = cached_part_shares(truths[a], merged, context.stats, env.fit, shared.rule.n_ref,
                                        config.batch_size, env.device, env.cache)
            verdict = assess(truths[a], tuned_stats, context.stats, env.fit, shared.rule, config.batch_size,
                             env.device, accuracy_kept=kept, shares=shares)
            before = concept_measures(merged_stats, a, concepts)
            records.append({"track": kind, **({} if name == shared.primary else {"model": name}),
                            "model_seed": seed, "layer": layer, "channel": a, "source_channels": [a, b],
                            "classes": [list(c) for c in concepts],
                            **{f"accuracy_{k}": round(v, 4) for k, v in group.items()}, **verdict,
                            **{f"merged_{k}": round(v, 4) for k, v in before.items() if not k.startswith("images")}})
            if verdict["accepted"]:
                accepted.append((kind, Target(f"{name}@seed{seed}", layer, a, concepts=concepts), context))
        out.append((where, group, records, accepted))
    return out


def _prefetch_trainings(env: Environment, config: RunConfig, shared: _Shared, plantings: list[tuple]) -> None:
    """With ``env.workers`` > 1 on the CPU: the plantings of the (model, seed)s run once in
    forked workers (:mod:`benchmark.core.forked`) so that their TRAININGS (the world CNN of
    each model seed, the functional fine-tunings) and validity checks
    (:mod:`benchmark.planting.checks`) land in the cache side by side. The workers store
    nothing else (their captures and calibrations run on one thread and are dropped:
    :class:`TrainingsOnly`), and the planting above then runs as without workers, reading
    the trainings and checks. Both run on one thread anyway (:mod:`benchmark.core.threads`),
    so the cache holds the same values either way and no number depends on the worker count;
    a worker that chose other pairs (a tie broken otherwise on one thread) only wastes work."""
    from benchmark.core.forked import run_groups

    workers = min(getattr(env, "workers", 1), len(plantings))
    if workers <= 1 or env.device.type != "cpu":
        return
    cache = env.cache

    def prefetch(planting: tuple) -> None:  # in a worker: the parent's env is not touched
        if not isinstance(env.cache, TrainingsOnly):
            env.cache, env.progress = TrainingsOnly(cache), False
        _plant_model(env, config, shared, *planting)

    counters = lambda: {"hits": env.cache.hits, "misses": env.cache.misses}  # noqa: E731
    added = run_groups([[p] for p in plantings], prefetch, workers, counters, done=lambda: 0, total=len(plantings),
                       progress=False)
    cache.hits += int(added.get("hits", 0))
    cache.misses += int(added.get("misses", 0))


class TrainingsOnly(Cache):
    """The same cache folder, storing only the trainings (the fine-tunings) and the validity
    checks: every other entry a worker computes is dropped, so the parent computes and stores
    it itself."""

    STORED = frozenset({"functional_planting", "planting_checks"})  # both computed on one thread

    def __init__(self, cache: Cache):
        super().__init__(cache.root)
        self.hits, self.misses = cache.hits, cache.misses  # go on counting from the cache it stands in for

    def save(self, kind: str, spec, tensors):  # type: ignore[override]  # returns None for a dropped entry
        return super().save(kind, spec, tensors) if kind in self.STORED else None


def _plan(env: Environment, kind: str, candidates: list[dict], targets: tuple[Target, ...], contexts: dict,
          model_seeds: dict, layers: list[str], required: bool, info: dict) -> TrackPlan:
    if not targets:
        examples = "; ".join(f"seed {c['model_seed']} {c['layer']}#{c['channel']}: {c['reasons'][0]}"
                             for c in candidates[:3])
        message = (f"no planted candidate passed the validity filter ({len(candidates)} tried"
                   f"{', e.g. ' + examples if examples else ''})")
        if required:
            raise ValueError(f"{message}; relax tracks.planted.min_* or plant in other layers "
                             "(or set tracks.planted.required = false to run the other tracks without it)")
        warnings.warn(f"{kind} track: {message}; the run goes on without planted targets on this track "
                      "(tracks.planted.required = false; every candidate and its reasons are in run.json)",
                      stacklevel=2)
        info["skipped"] = message
        return TrackPlan(kind, "split", env.context(layers[0]), (), info)
    mine = {t: contexts[t] for t in targets}
    return TrackPlan(kind, "split", mine[targets[0]], targets, info, contexts=mine,
                     model_seeds={t: model_seeds[t] for t in targets})
