"""Finished run units kept in the cache, so a run into a NEW folder reuses them.

A unit (track x method x target) writes its rows (``parts/<key>.csv``), its split card
(``cards/<key>.json``) with the thumbnails the card shows, and, for the first target of a
traced track or a detection unit, its trace or pair table. The unit's key (the part's file
stem, :meth:`benchmark.run.runner.Runner._key`) is a hash of the run's identity (resolved
configuration and harness code), of the unit itself and of the code of its method and
metrics with everything they import. Two units with the same key therefore compute the
same bytes, and the cache may hand one's files to the other: a warm run (same config, same
code, a fresh output folder) reads its units instead of recomputing them, and its
``results.csv`` is byte-identical to the run that stored them (``polysemy compare``).

The bundle is one cache entry of kind ``unit_results`` (a uint8 tensor per file, with the
cache's checksum); a corrupted entry is recomputed like any other. The part is written
last, because a part on disk marks its unit as finished. ``polysemy cache clear --kind
unit_results`` drops the bundles (the next run recomputes its units).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmark.storage.cache import Cache, atomic_write

KIND = "unit_results"


def _members(work: Path, key: str) -> list[Path]:
    """The files unit ``key`` wrote into ``work``, its part last."""
    from benchmark.engine.cards import card_thumbnails, load_card
    from benchmark.engine.traces import SUFFIX

    card = work / "cards" / f"{key}.json"
    files = [card] if card.is_file() else []
    if files:
        files += [work / "thumbs" / name for name in sorted(card_thumbnails(load_card(card)))]
    trace = work / "traces" / f"{key}{SUFFIX}"
    files += [trace] if trace.is_file() else []
    files += sorted((work / "detection").glob(f"*-{key}.csv")) if (work / "detection").is_dir() else []
    return files + [work / "parts" / f"{key}.csv"]


def store(cache: Cache, work: Path, key: str) -> None:
    """Keep the files of the finished unit ``key`` (in ``work``) in the cache."""
    tensors = {path.relative_to(work).as_posix(): torch.from_numpy(np.frombuffer(path.read_bytes(), np.uint8).copy())
               for path in _members(work, key)}
    cache.save(KIND, {"unit": key}, tensors)


def restore(cache: Cache, work: Path, key: str) -> bool:
    """Write the stored files of unit ``key`` into ``work`` (atomically, the part last);
    False when the cache holds none (or a corrupted entry)."""
    found = cache.load(KIND, {"unit": key})
    if found is None:
        cache.misses += 1
        return False
    cache.hits += 1
    part = f"parts/{key}.csv"
    for name in sorted(found, key=lambda n: n == part):
        target = work / name
        if name.startswith("thumbs/") and target.is_file():  # content-addressed: the same name is the same image
            continue
        data = found[name].numpy().tobytes()
        atomic_write(target, lambda p, data=data: p.write_bytes(data))
    return True
