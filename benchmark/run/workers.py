"""Units of a run spread over worker processes (``polysemy run --workers N``).

A run's units (track x method x target) are independent once the tracks are planned: each
reads the shared, already planned contexts and writes its own part file atomically
(:mod:`benchmark.run.runner`). After planning, the runner forks ``N`` workers (the ``fork``
start method: the planned models, contexts and memos are inherited, not pickled). Units are
grouped by target (every method of a target back to back, so the per-target memos are
computed once per group); each worker takes the next group from a shared queue until none is
left, so a slow target never holds up the others.

Every unit runs on one intra-op torch thread, in the workers and in a run with one worker
alike (:func:`benchmark.core.threads.single_threaded`), so the numbers do not depend on the
number of workers: ``--workers 1`` and ``--workers 2`` give the same ``results.csv`` bit for
bit (``tests/run/test_workers.py``). Stage timings and cache counters of the workers are
added to the run's (``run.json`` -> ``timings``: a stage's seconds are summed over workers).

Failure: the first unit that raises stops the run. The worker sends the exception (when it
can be pickled; else a ``RuntimeError`` naming its type) with its formatted traceback, the
other workers are stopped, and the parent re-raises the worker's exception, chained to a
:class:`WorkerTraceback` that carries the traceback as the worker printed it. A worker that
dies without a word (killed, out of memory) fails the run with its exit code or signal.
Finished units keep their parts; a stopped worker unwinds (SIGTERM raises ``SystemExit``), so
a unit in flight leaves neither a part nor a temporary file: the next run resumes. CUDA cannot be forked: on a CUDA device the run uses one worker.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import time
import traceback
from typing import Callable, Sequence

from tqdm.auto import tqdm

POLL_S = 0.2  # how often the parent refreshes the progress bar and checks its workers


class WorkerTraceback(Exception):
    """The traceback of an exception raised in a worker process, as the worker formatted it."""


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. under SLURM or taskset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_workers(requested: int | str, device: str) -> int:
    """``"auto"``: one per usable CPU; an int >= 1 as given; always 1 on a CUDA device."""
    if requested == "auto":
        count = usable_cpus()
    elif isinstance(requested, int) and not isinstance(requested, bool) and requested >= 1:
        count = requested
    else:
        raise ValueError(f"workers must be 'auto' or an integer >= 1, got {requested!r}")
    return 1 if str(device).startswith("cuda") else count


def parse_workers(text: str) -> int | str:
    """The ``--workers`` option: ``auto`` or an integer >= 1."""
    import argparse

    if text != "auto" and not (text.isdigit() and int(text) >= 1):
        raise argparse.ArgumentTypeError(f"expected 'auto' or an integer >= 1, got {text!r}")
    return text if text == "auto" else int(text)


def run_groups(groups: Sequence[Sequence], run_unit: Callable, workers: int, counters: Callable[[], dict],
               done: Callable[[], int], total: int, progress: bool) -> dict[str, float]:
    """Runs ``run_unit(unit)`` for every unit of ``groups`` in ``workers`` forked processes.

    ``counters()`` reads the process's additive counters (stage seconds, cache hits, ...);
    each worker reports how much its units added to them, and the sum over workers is
    returned. ``done()`` counts the finished units (their parts on disk) for the progress
    bar of ``total`` units.
    """
    ctx = mp.get_context("fork")
    queue = ctx.SimpleQueue()
    for index in range(len(groups)):
        queue.put(index)
    for _ in range(workers):
        queue.put(None)
    pipes, procs = [], []
    for rank in range(workers):
        receive, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_worker, args=(rank, groups, run_unit, counters, queue, send), daemon=True,
                           name=f"polysemy-worker-{rank}")
        proc.start()
        send.close()
        pipes.append(receive)
        procs.append(proc)
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
        from benchmark.core.progress import progress_bars

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
