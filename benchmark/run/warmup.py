"""Embedder weights trained in the background while a run sets up and plants.

The synthetic world's ``judge`` embedder is a network trained on first use (80 s on one
core) and then kept in the cache. In a run with two or more workers its first use is inside
the units, so every worker that reaches it at the same time trains it, side by side, while
the parent's set-up (the world CNN of the run's model seed, trained on one thread) kept the
other core idle. :func:`start` forks ONE process before the set-up that calls
:meth:`benchmark.core.plugins.Embedder.prepare` for every embedder the run's metrics declare
(``Metric.embedders``), so the weights are in the cache when the units start;
:meth:`Warmup.join` waits for it before the units.

Best effort: it changes no number (the embedder trains on one thread, so its weights are the
same in any process, and the cache stores an entry atomically or not at all). A warm-up that
fails is ignored: the units then prepare the embedder themselves and a bug raises there,
with its traceback. A run that stops early terminates the warm-up (:meth:`Warmup.stop`).
"""
from __future__ import annotations

import multiprocessing as mp
from typing import Any, Iterable


class Warmup:
    """A forked process preparing embedders (or nothing, with ``process`` None)."""

    def __init__(self, process: Any = None):
        self.process = process

    def join(self) -> None:
        """Wait for the warm-up to end (successfully or not)."""
        if self.process is not None:
            self.process.join()
            self.process = None

    def stop(self) -> None:
        """Terminate a warm-up still running (a run that failed or was interrupted)."""
        if self.process is not None:
            if self.process.is_alive():
                self.process.terminate()
            self.process.join()
            self.process = None


def embedder_specs(metrics: Iterable) -> list[tuple[str, tuple[tuple[str, Any], ...]]]:
    """The distinct (embedder name, arguments) the metrics declare, in order."""
    specs: dict[tuple, None] = {}
    for metric in metrics:
        for name, args in metric.instance.embedders():
            specs[(str(name), tuple(sorted(dict(args).items())))] = None
    return list(specs)


def _prepare(specs: list[tuple[str, tuple[tuple[str, Any], ...]]]) -> None:
    """The forked process: one torch thread (GNU OpenMP's thread team does not survive a
    fork: a parallel op in the child of a parent that used it waits forever), no progress
    bars, and ``os._exit`` (none of the parent's exit handlers: run lock, caches)."""
    import os

    import torch

    from benchmark.core.progress import progress_bars
    from benchmark.core.registry import EMBEDDERS

    torch.set_num_threads(1)
    try:
        with progress_bars(False):  # the parent's bars own the terminal
            for name, args in specs:
                EMBEDDERS.get(name)(**dict(args)).prepare()
    except Exception:  # noqa: BLE001  # the units prepare it again and raise there, with the traceback
        pass
    finally:
        os._exit(0)


def start(metrics: Iterable, workers: int, device: str) -> Warmup:
    """Fork the warm-up when the run has >= 2 workers on the CPU and a metric declares an
    embedder with something to prepare; otherwise a Warmup that does nothing."""
    from benchmark.core.registry import EMBEDDERS

    if workers < 2 or not str(device).startswith("cpu"):
        return Warmup()
    specs = [(n, a) for n, a in embedder_specs(metrics) if EMBEDDERS.get(n).prepares_weights]
    if not specs:
        return Warmup()
    process = mp.get_context("fork").Process(target=_prepare, args=(specs,), daemon=True, name="polysemy-warmup")
    process.start()
    return Warmup(process)
