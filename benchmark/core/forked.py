"""A pool of forked worker processes that run groups of work items and report back.

Used by the runner for its units (:mod:`benchmark.run.workers`) and by the planted track for
its trainings (:mod:`benchmark.tracks.planted`). The ``fork`` start method: the workers
inherit the parent's objects (planned models, contexts, memos), nothing is pickled but the
reports. Each worker takes the next group index from a shared queue until none is left, runs
on one torch thread, and reports how much its work added to the parent's additive counters
(``counters()``: stage seconds, cache hits, ...).

Failure: the first item that raises stops the pool. The worker sends the exception (when it
can be pickled; else a ``RuntimeError`` naming its type) with its formatted traceback, the
other workers are stopped, and the parent re-raises the worker's exception, chained to a
:class:`WorkerTraceback` that carries the traceback as the worker printed it. A worker that
dies without a word (killed, out of memory) fails with its exit code or signal. A stopped
worker unwinds (SIGTERM raises ``SystemExit``), so a file being written atomically leaves no
temporary file behind. CUDA cannot be forked: callers use one process there.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import time
import traceback
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from benchmark.core.progress import progress_bars

POLL_S = 0.2  # how often the parent refreshes the progress bar and checks its workers


class WorkerTraceback(Exception):
    """The traceback of an exception raised in a worker process, as the worker formatted it."""


def run_groups(groups: Sequence[Sequence], run_unit: Callable, workers: int, counters: Callable[[], dict],
               done: Callable[[], int], total: int, progress: bool) -> dict[str, float]:
    """Runs ``run_unit(unit)`` for every unit of ``groups`` in ``workers`` forked processes.

    ``counters()`` reads the process's additive counters (stage seconds, cache hits, ...);
    each worker reports how much its units added to them, and the sum over workers is
    returned. ``done()`` counts the finished units (their parts on disk) for the progress
    bar of ``total`` units.
    """
    ctx = mp.get_context("fork")
    queue = ctx.Queue()  # a feeder thread writes the pipe: put() never blocks, however many groups
    pipes, procs = [], []
    for rank in range(workers):
        receive, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_worker, args=(rank, groups, run_unit, counters, queue, send), daemon=True,
                           name=f"polysemy-worker-{rank}")
        proc.start()
        send.close()
        pipes.append(receive)
        procs.append(proc)
    for index in range(len(groups)):  # after the fork: the workers read while the queue is fed
        queue.put(index)
    for _ in range(workers):
        queue.put(None)
    reports: dict[int, dict] = {}
    bar = tqdm(total=total, initial=min(done(), total), desc="benchmark", unit="unit", disable=not progress)
    try:
        while len(reports) < workers:
            for rank, (pipe, proc) in enumerate(zip(pipes, procs)):
                if rank in reports:
                    continue
                message = None
                if pipe.poll():
                    try:
                        message = pipe.recv()
                    except EOFError:  # the worker died: its end of the pipe closed without a message
                        proc.join()
                if message is not None:
                    if message["status"] == "error":
                        _raise(rank, message)
                    reports[rank] = message
                elif proc.exitcode is not None:
                    raise RuntimeError(f"worker {rank} of {workers} ended without a report ({_how(proc.exitcode)}); "
                                       "finished units keep their parts, rerun the same command to resume")
            bar.n = min(done(), total)
            bar.refresh()
            time.sleep(POLL_S)
    finally:
        bar.close()
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        for proc in procs:
            proc.join()
        queue.cancel_join_thread()  # what stopped workers left unread must not keep the parent waiting
        queue.close()
    added: dict[str, float] = {}
    for report in reports.values():
        for name, value in report["added"].items():
            added[name] = added.get(name, 0.0) + value
    return added


def _how(exitcode: int) -> str:
    if exitcode < 0:
        return f"killed by {signal.Signals(-exitcode).name}"
    return f"exit code {exitcode}"


def _raise(rank: int, message: dict) -> None:
    cause = WorkerTraceback(f"in worker {rank}:\n{message['traceback']}")
    try:
        error = pickle.loads(message["exception"])
    except Exception:  # noqa: BLE001 -- an exception that does not unpickle is named instead
        error = RuntimeError(f"{message['type']}: {message['text']}")
    raise error from cause


def _stopped(_signum, _frame) -> None:
    raise SystemExit("stopped by the run: another worker failed")


def _worker(rank: int, groups, run_unit: Callable, counters: Callable[[], dict], queue, send) -> None:
    """A forked worker: the groups it takes from ``queue``, then its report; never returns."""
    code = 0
    signal.signal(signal.SIGTERM, _stopped)  # a stop unwinds: a part being written removes its temporary file
    try:
        torch.set_num_threads(1)  # N workers share the machine's cores
        before = dict(counters())
        with progress_bars(False):  # the parent draws the one progress bar
            while (index := queue.get()) is not None:
                for unit in groups[index]:
                    run_unit(unit)
        after = counters()
        send.send({"status": "ok", "added": {k: v - before.get(k, 0.0) for k, v in after.items()
                                             if v != before.get(k, 0.0)}})
    except BaseException as error:  # noqa: BLE001 -- every failure goes to the parent
        code = 1
        try:
            payload = pickle.dumps(error)
        except Exception:  # noqa: BLE001
            payload = b""
        send.send({"status": "error", "exception": payload, "type": type(error).__name__, "text": str(error),
                   "traceback": traceback.format_exc()})
    finally:
        send.close()
        os._exit(code)  # no atexit handlers or finalizers of the parent's objects (run lock, caches)
