"""Thread-count independence of the trainings whose results the benchmark caches.

Torch's CPU kernels split reductions (a convolution's weight gradient over the batch, a
matmul's inner sums) over its intra-op threads, so the rounding of a training step depends
on the thread count; over thousands of steps the difference grows into another network
(measured: the synthetic world's CNN trained with 1 and with 2 threads differs by up to 144
in a weight). :func:`single_threaded` runs a block on one intra-op thread and restores the
caller's setting, so a training gives the same weights whatever the machine's core count or
``OMP_NUM_THREADS``. Used by every optimisation whose result is cached or scored: the world
CNN and judge training, the functional planting's fine-tuning, the SAE dictionaries and the
feature-visualisation renderings. CUDA is unaffected (its kernels do not use these threads).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(1)``; the previous count is restored."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
