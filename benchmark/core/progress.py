"""One process-wide switch for progress bars that a run cannot hand down as an argument.

Most long work takes ``progress=`` from the runner. A few pieces start deep inside a metric
(the judge embedder trains the world's judge network the first time a metric embeds with
it); they ask :func:`enabled`. :class:`benchmark.run.runner.Runner` sets the switch for the
duration of a run (``polysemy run --quiet``: off) and restores it afterwards.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

_STATE = {"enabled": True}


def enabled() -> bool:
    """Whether progress bars may be shown."""
    return _STATE["enabled"]


@contextmanager
def progress_bars(on: bool) -> Iterator[None]:
    """Bars on or off inside the ``with`` block; the previous setting comes back after it."""
    before = _STATE["enabled"]
    _STATE["enabled"] = bool(on)
    try:
        yield
    finally:
        _STATE["enabled"] = before
