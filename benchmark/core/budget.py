"""Run budget: per-stage wall times of a run (``run.json`` -> ``timings``) and the shared
work done once before a track's units (methods' optional ``prepare``).

Stage names: ``fit/<method>``, ``metric/<metric>``, ``trace``, ``prepare/<method>`` (summed
over units, seconds) and ``units/<track>``; the runner adds ``setup_s``, ``plan_<track>_s``,
``units_s``, ``render_s`` and ``total_s``, and :mod:`benchmark.reporting.run_figures` ``figure/<name>``.
A method may define ``prepare(context, targets)`` to compute, in one shared pass, what its
fits of ``targets`` will read from the cache (PURE: every channel's reference attributions,
one forward per batch of reference images), and ``prepare_detection(context, targets)`` the
same for its polysemanticity scores; neither may change any result.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator

from benchmark.core.errors import plugin_code


class StageTimer:
    """Accumulates wall seconds per stage name into a plain dict (JSON-ready)."""

    def __init__(self, timings: dict[str, float] | None = None):
        self.timings = timings if timings is not None else {}

    @contextmanager
    def __call__(self, *name: str) -> Iterator[None]:
        key = "/".join(name)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - t0


def prepare_units(units, done: Callable, timer: StageTimer) -> None:
    """Calls ``method.instance.prepare(context, targets)`` once per (split plan, method,
    context) with the targets whose units are not done yet (``done(plan, method, target)``),
    and ``prepare_detection(context, targets)`` per context of a pending detection unit."""
    pending: dict[tuple[int, int, int], tuple] = {}
    for plan, method, target in units:
        hook = "prepare" if plan.kind == "split" else "prepare_detection"
        if not method.instance.has_prepare(hook) or done(plan, method, target):
            continue
        context = plan.context_of(target) if target is not None else plan.context
        entry = pending.setdefault((id(plan), id(method), id(context)), (plan, method, hook, context, []))
        entry[4].append(target)
    for plan, method, hook, context, targets in pending.values():
        with timer("prepare", method.name), plugin_code("method", method.name, method.instance):
            if hook == "prepare":
                method.instance.prepare(context, tuple(targets))
            else:
                for ctx, mine in by_context(plan):
                    method.instance.prepare_detection(ctx, mine)


def by_context(plan) -> list[tuple]:
    """(context, targets) of a plan, its targets grouped by context in target order."""
    groups: dict[int, tuple] = {}
    for t in plan.targets:
        ctx = plan.context_of(t)
        groups.setdefault(id(ctx), (ctx, []))[1].append(t)
    return [(ctx, tuple(ts)) for ctx, ts in groups.values()]
