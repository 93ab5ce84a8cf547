"""The run's memory of values computed for live objects.

One :class:`RunMemo` is owned by a run (its Environment creates it and puts it in every
Context it builds, ``context.memo``); methods and metrics keep there what every method of a
target can share (the reference pool, crop boxes and their embeddings, the original
channel's map, the planted parts), in named sections. Nothing is kept at module level, so
two runs in one process (or two contexts made apart) never see each other's entries, and
the memory goes away with the run.

An entry is keyed by the identity of live objects (a model, a dataset, a planted truth) plus
a key of plain values, and keeps those objects alive: a hit needs the very same objects (an
id reused after garbage collection never hits). Each section is a small LRU.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Hashable


class ObjectMemo:
    """A small LRU of values computed for live objects (see module docstring).

    ``get(objects, key, compute)``: the entry is keyed by the ids of ``objects`` and ``key``,
    and keeps the objects themselves, so a hit needs the very same objects (an id reused
    after garbage collection never hits); the ``size`` most recently used entries stay."""

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.size = size
        self.store: "OrderedDict[tuple, tuple[tuple, Any]]" = OrderedDict()

    def get(self, objects: tuple, key: tuple[Hashable, ...], compute: Callable[[], Any]) -> Any:
        full = tuple(id(o) for o in objects) + tuple(key)
        hit = self.store.get(full)
        if hit is not None and len(hit[0]) == len(objects) and all(a is b for a, b in zip(hit[0], objects)):
            self.store.move_to_end(full)
            return hit[1]
        value = compute()
        self.store[full] = (tuple(objects), value)
        self.store.move_to_end(full)
        while len(self.store) > self.size:
            self.store.popitem(last=False)
        return value

    def clear(self) -> None:
        self.store.clear()


class RunMemo:
    """Named :class:`ObjectMemo` sections of one run (see module docstring)."""

    def __init__(self) -> None:
        self._sections: dict[str, ObjectMemo] = {}

    def section(self, name: str, size: int) -> ObjectMemo:
        """The section ``name`` (created with ``size`` entries on first use)."""
        found = self._sections.get(name)
        if found is None:
            found = self._sections[name] = ObjectMemo(size)
        return found

    def get(self, section: str, objects: tuple, key: tuple[Hashable, ...], compute: Callable[[], Any],
            size: int = 4) -> Any:
        """``compute()`` once per (objects, key) in ``section`` (LRU of ``size`` entries)."""
        return self.section(section, size).get(objects, key, compute)

    def __len__(self) -> int:
        return sum(len(s.store) for s in self._sections.values())

    def clear(self) -> None:
        self._sections.clear()
