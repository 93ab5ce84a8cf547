"""``polysemy capture CONFIG``: the capture statistics a run needs, computed ahead of the run,
sharded over the processes of a ``torchrun`` launch (:mod:`benchmark.engine.sharding`).

What it computes: for every subject the pairs, layer and detection tracks study (each model at
each of its layers, :meth:`benchmark.engine.environment.Environment.subjects`, and every
track's own ``layer``), the tau calibration (when the config asks for one) and the capture of
the fit split, which the run then reads from the cache. This is the part of a run that grows
with the data (ARV's statistics read every training image once); the planted track's merged
copies of a model are captured by the run itself.

Under torchrun, rank 0 first loads (or trains) the models and datasets and calibrates tau, so
that the other ranks read them from the cache; then every rank captures its shard of each
subject's images. In one process, this is a plain capture.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, fields

from benchmark.core.config import RunConfig
from benchmark.engine import sharding
from benchmark.engine.environment import Environment, Subject
from benchmark.storage.cache import Cache


@dataclass(frozen=True)
class CapturedSubject:
    """One subject's capture: where, how long, and whether the cache already had it."""

    model: str
    layer: str
    seconds: float
    from_cache: bool
    channels: int
    images: int


def run_subjects(env: Environment) -> list[Subject]:
    """Every (model, layer) the run's pairs, layer and detection tracks study, once each."""
    layers: list[str | None] = [None]
    for f in fields(env.config.tracks):
        layer = getattr(getattr(env.config.tracks, f.name), "layer", None)
        if layer and layer not in layers:
            layers.append(layer)
    seen: dict[tuple[str, str], Subject] = {}
    for layer in layers:
        for subject in env.subjects(layer):
            seen.setdefault((subject.model, subject.layer), subject)
    return list(seen.values())


def capture_run(config: RunConfig, cache: Cache | None = None, progress: bool = True) -> list[CapturedSubject]:
    """Capture every subject of ``config`` (see the module docstring); returns what was done."""
    rank, size = sharding.init_from_environment(config.device)
    cache = cache if cache is not None else Cache()
    env = None
    if rank == 0:  # models (trained if need be), datasets and tau calibrations land in the cache once
        env = Environment(config, cache=cache, progress=progress)
        for subject in run_subjects(env):
            env.tau(env.models[subject.model], subject.layer, subject.model)
    sharding.barrier("preparing the models and data on rank 0")
    if env is None:
        env = Environment(config, cache=cache, progress=False)
    done = []
    for subject in run_subjects(env):
        hits, start = cache.hits, time.perf_counter()
        context = env.subject_context(subject)
        done.append(CapturedSubject(subject.model, subject.layer, time.perf_counter() - start,
                                    cache.hits > hits, context.stats.num_channels, len(env.fit)))
    return done


def capture_command(config: RunConfig, progress: bool = True) -> int:
    """``polysemy capture``: :func:`capture_run`, its lines printed (:func:`describe`); in a
    torchrun launch the rank then leaves the process group and ends its process at once
    (:func:`benchmark.engine.sharding.exit_rank`)."""
    for line in describe(capture_run(config, progress=progress)):
        print(line)
    if sharding.world()[1] > 1:
        sharding.exit_rank(0)
    return 0


def describe(done: list[CapturedSubject]) -> list[str]:
    """One line per subject, printed by rank 0 only (no line on the other ranks)."""
    rank, size = sharding.world()
    if rank != 0:
        return []
    over = f" over {size} processes" if size > 1 else ""
    return [f"{c.model}:{c.layer}: {c.images} fit images, {c.channels} channels, "
            f"{'from the cache' if c.from_cache else f'captured in {c.seconds:.1f} s{over}'}" for c in done]
