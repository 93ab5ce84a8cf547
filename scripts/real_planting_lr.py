"""Calibration of the real-model track's functional planting, on the FIT split only.

    python scripts/real_planting_lr.py [--layer _blocks.10._project_conv] [--lrs 3e-3 1e-3 3e-4 1e-4]

1. Learning rate (``tracks.planted.functional_lr`` of ``benchmark/configs/real.toml``): the
   candidates of one (model, layer) are planted as the planted track plants them, the copy
   is fine-tuned (:func:`benchmark.planting.functional.finetune_downstream`, the config's
   schedule) at each rate on the fit images but every 4th one of each category, and its
   accuracy is measured on those held-back fit images, which the fine-tuning never saw. The held-out images
   the track scores (and its validity filter reads) are not used.
2. Why not the heads: how many channels of each subject (model, layer) are important
   (ARV's relevance filter at the layer's calibrated tau) on at least half, or 30%, of the
   fit images of their own top category -- a planted part can only pass the validity
   filter if the network uses its channel for its category.

The figures it prints are quoted in real.toml and the README ("The real-model track").
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import time

from benchmark.core.config import load_config
from benchmark.engine.capture import CaptureSpec, capture
from benchmark.engine.environment import Environment
from benchmark.planting.functional import FunctionalSchedule, finetune_downstream
from benchmark.planting.merge import accuracy, choose_planting_pairs, class_selectivity, mean_responses, plant
from benchmark.planting.validity import concept_measures
from benchmark.sources.datasets import Subset
from benchmark.storage.cache import Cache
from benchmark.tracks.plan import wordnet_unrelated


def learning_rates(env: Environment, layer: str, lrs: list[float], dropout: float | None = None,
                   steps: int | None = None) -> None:
    config = env.config
    cfg, name = config.tracks.planted, config.model.name
    base = env.models[name]
    stats = env.context(layer, base, model_name=name).stats
    chosen = choose_planting_pairs(stats, cfg.num_channels, wordnet_unrelated(env.fit.classes, cfg.wordnet_threshold),
                                   max_profile_correlation=cfg.max_part_correlation,
                                   min_relevance=cfg.min_candidate_relevance)
    pairs, classes = [p for p, _ in chosen], [((a,), (b,)) for _, (a, b) in chosen]
    merged, _ = plant(base, layer, pairs, classes, offsets=mean_responses(base, layer, stats, env.fit.images([0])))
    labels = env.fit.labels
    held_ids = sorted(i for c in labels.unique().tolist() for i in (labels == c).nonzero().flatten().tolist()[3::4])
    train = Subset(env.fit, sorted(set(range(len(env.fit))) - set(held_ids)))
    held = Subset(env.fit, held_ids)
    print(f"{name} {layer}: {len(pairs)} candidates {pairs}; fine-tuned on {len(train)} fit images, "
          f"accuracy on the other {len(held)} (every 4th fit image of each category)")
    print(f"  original {accuracy(base, held, config.batch_size):.3f}, merged {accuracy(merged, held, config.batch_size):.3f}")
    schedule = FunctionalSchedule(steps or cfg.functional_steps, cfg.functional_batch_size, cfg.functional_lr,
                                  cfg.functional_dropout if dropout is None else dropout, env.seeds.model)
    tau = env.tau(base, layer, name)

    def used(model) -> list[float]:  # per candidate: the smaller relevance-filter share of its two concepts
        stats = capture(model, held, CaptureSpec(layer, tau=tau, top_k=10, batch_size=config.batch_size), progress=False)
        shares = [concept_measures(stats, a, c) for (a, _), c in zip(pairs, classes)]
        return [round(min(m["relevance_c0"], m["relevance_c1"]), 2) for m in shares]

    print(f"  schedule {schedule}; relevance share per candidate (the smaller of its two concepts, "
          f"held-back photos, tau {tau:.4f}): merged {used(merged)}")
    for lr in lrs:
        start = time.perf_counter()
        tuned = finetune_downstream(copy.deepcopy(merged), layer, [a for a, _ in pairs], train,
                                    dataclasses.replace(schedule, lr=lr))
        print(f"  lr {lr:g}: {accuracy(tuned, held, config.batch_size):.3f}, relevance shares {used(tuned)} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)


def carriers(env: Environment) -> None:
    for subject in env.subjects():
        stats = env.subject_context(subject).stats
        counts = []
        for share in (0.5, 0.3):
            carries = stats.relevant_classes(share)
            counts.append(sum(bool(carries[s.top_class, s.channel]) for s in class_selectivity(stats)))
        print(f"{subject.model} {subject.layer}: {counts[0]} / {counts[1]} of {stats.num_channels} channels "
              "important on >= 50% / 30% of their top category's fit images")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", default="_blocks.10._project_conv")
    parser.add_argument("--lrs", type=float, nargs="+", default=[3e-3, 1e-3, 3e-4, 1e-4])
    parser.add_argument("--candidates", type=int, default=6, help="planted pairs (the config's num_channels if 0)")
    parser.add_argument("--dropout", type=float, help="dropout of the layer's other channels (default: the config's)")
    parser.add_argument("--steps", type=int, help="fine-tuning steps (default: the config's)")
    parser.add_argument("--no-carriers", action="store_true", help="skip part 2")
    args = parser.parse_args()
    overrides = {"tracks.planted.num_channels": args.candidates} if args.candidates else {}
    env = Environment(load_config("real", overrides), Cache(), progress=False)
    learning_rates(env, args.layer, args.lrs, args.dropout, args.steps)
    if not args.no_carriers:
        carriers(env)


if __name__ == "__main__":
    main()
