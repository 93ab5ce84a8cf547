"""The shipped stamp tables: which Tux Paint photo belongs to which WordNet category.

``benchmark/data/stamp_photos.tsv`` (one row per candidate stamp: path, status
mapped/dropped, synset, category, ImageNet wnid where the synset is an ImageNet-1k class,
reason, English description) and ``benchmark/data/stamp_categories.tsv`` (the classes:
index, wnid, synset, readable name, number of photos, ImageNet-1k indices pooled into the
class) are written by :mod:`benchmark.sources.photos.build_table`; this module only reads them, so
no WordNet is needed at run time.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from benchmark.sources.datasets import ClassInfo

STAMPS_TABLE = "stamp_photos.tsv"
CATEGORIES_TABLE = "stamp_categories.tsv"


@dataclass(frozen=True)
class PhotoClass(ClassInfo):
    """A category: :class:`ClassInfo` plus the ImageNet-1k indices pooled into it."""

    imagenet: tuple[int, ...] = ()


@dataclass(frozen=True)
class Stamp:
    """One stamp of the table (``path`` relative to the stamps folder)."""

    path: str
    status: str
    synset: str
    category: str
    imagenet_wnid: str
    reason: str
    description: str


def _rows(name: str) -> list[dict[str, str]]:
    text = resources.files("benchmark").joinpath("data").joinpath(name).read_text(encoding="utf-8")
    lines = text.splitlines()
    header = lines[0].split("\t")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        values = line.split("\t")
        if len(values) != len(header):
            raise RuntimeError(f"{name} line {number}: {len(values)} fields, expected {len(header)} ({header})")
        rows.append(dict(zip(header, values)))
    return rows


@lru_cache(maxsize=1)
def stamps() -> tuple[Stamp, ...]:
    """Every candidate stamp of the table, mapped or dropped (sorted by path)."""
    return tuple(Stamp(**row) for row in _rows(STAMPS_TABLE))


@lru_cache(maxsize=1)
def photo_classes() -> tuple[PhotoClass, ...]:
    """The categories in label order."""
    out = []
    for position, row in enumerate(_rows(CATEGORIES_TABLE)):
        if int(row["index"]) != position:
            raise RuntimeError(f"{CATEGORIES_TABLE}: row {position} has index {row['index']}")
        members = tuple(int(i) for i in row["imagenet"].split(",") if i)
        out.append(PhotoClass(position, row["wnid"], row["synset"], row["name"], members))
    return tuple(out)


def mapped_stamps() -> dict[int, tuple[Stamp, ...]]:
    """Label -> the mapped stamps of that category (sorted by path)."""
    index = {c.synset: c.index for c in photo_classes()}
    out: dict[int, list[Stamp]] = {c.index: [] for c in photo_classes()}
    for stamp in stamps():
        if stamp.status == "mapped":
            if stamp.category not in index:
                raise RuntimeError(f"{STAMPS_TABLE}: {stamp.path} maps to {stamp.category}, not a category of "
                                   f"{CATEGORIES_TABLE}")
            out[index[stamp.category]].append(stamp)
    return {label: tuple(items) for label, items in out.items()}
