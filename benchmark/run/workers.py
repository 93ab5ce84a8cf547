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

The pool itself (queue, reports, failures) is :mod:`benchmark.core.forked`: the first unit
that raises stops the run with its own exception and the worker's traceback; finished units
keep their parts, a unit in flight leaves neither a part nor a temporary file, and the next
run resumes. CUDA cannot be forked: on a CUDA device the run uses one worker.
"""
from __future__ import annotations

import os


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
