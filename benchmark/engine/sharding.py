"""Sharded capture over processes and machines with ``torch.distributed``.

Launched by ``torchrun`` (one process per GPU, or per CPU core group; under SLURM, ``srun``
starting one ``torchrun`` per node), every process ("rank") joins the process group that
torchrun's environment describes (``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR``, ``MASTER_PORT``)
with the ``gloo`` backend on the CPU and ``nccl`` on CUDA. A capture then runs on the shard of
the images that is the rank's (:func:`benchmark.engine.capture.shard_indices`: whole
single-process batches, round robin), the ranks exchange their associative partial statistics
(:func:`all_gather`) and each merges them into the statistics of the single-process pass; rank
0 alone writes them to the cache.

A rank that dies (killed, out of memory, a bug) makes the collective calls of the others fail
(or time out after ``POLYSEMY_DIST_TIMEOUT`` seconds, default 600): they stop with a
:class:`ShardedCaptureError` that says which step failed, and nothing is written to the cache.
This module does not exist in the authors' code (their statistics are one process).
"""
from __future__ import annotations

import datetime
import os
import sys
from typing import Any

import torch
import torch.distributed as dist

from benchmark.core.errors import PolysemyError

TIMEOUT_ENV = "POLYSEMY_DIST_TIMEOUT"


class ShardedCaptureError(PolysemyError, RuntimeError):
    """A sharded capture could not complete: a rank failed, or the ranks disagree."""


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def launched_size() -> int:
    """The world size torchrun (or srun + torchrun) started this process in; 1 when not launched."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ShardedCaptureError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None


def init_from_environment(device: str | torch.device = "cpu") -> tuple[int, int]:
    """Join the process group of a torchrun launch (once); returns (rank, world size).
    Backend: ``nccl`` when ``device`` is CUDA, else ``gloo``."""
    if launched_size() > 1 and not dist.is_initialized():
        if not dist.is_available():
            raise ShardedCaptureError("this torch build has no torch.distributed: launch one process")
        cuda = torch.device(device).type == "cuda"
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "600")))
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
    return world()


def all_gather(value: Any, what: str) -> list[Any]:
    """Every rank's ``value`` (picklable; tensors on the CPU), in rank order."""
    rank, size = world()
    if size == 1:
        return [value]
    gathered: list[Any] = [None] * size
    try:
        dist.all_gather_object(gathered, value)
    except Exception as err:  # gloo/nccl raise RuntimeError subclasses that name the lost peer
        raise ShardedCaptureError(
            f"rank {rank} of {size}: {what} failed while gathering the ranks' results: another rank "
            f"stopped or cannot be reached ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
            f"nothing was written to the cache") from err
    return gathered


def barrier(what: str) -> None:
    """Wait for every rank (a no-op in one process)."""
    rank, size = world()
    if size == 1:
        return
    try:
        dist.barrier()
    except Exception as err:
        raise ShardedCaptureError(f"rank {rank} of {size}: {what}: another rank stopped or cannot be reached "
                                  f"({type(err).__name__})") from err


def shutdown() -> None:
    """Leave the process group cleanly: wait for every rank, then destroy it (a rank that exits
    while a peer still reads its last message makes the peer abort). A no-op in one process."""
    if dist.is_available() and dist.is_initialized():
        barrier("finishing")
        dist.destroy_process_group()


def exit_rank(code: int) -> None:
    """End a rank's process after :func:`shutdown`, without the interpreter's exit handlers:
    with them, about 1 launch in 6 of a 2-rank gloo run on this machine aborted at exit
    ("terminate called without an active exception", SIGABRT) after all its work was done and
    written; skipping them, 0 of 12. Output is flushed first."""
    shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
