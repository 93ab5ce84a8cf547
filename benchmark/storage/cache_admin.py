"""Listing, clearing and verifying the cache (``polysemy cache ls|clear|verify``).

``clear`` removes only what the cache itself wrote: files named like entries
(``<key>.safetensors``, ``<name>-<key>.safetensors``) and their leftover temp files, inside
the folders of registered kinds (:data:`benchmark.storage.cache.KINDS`) directly under a root that
carries the cache marker. Provisioned data (the WordNet folder ``nltk_data``), any other
file or folder, symbolic links and everything outside the root are never touched. A kind
is a registered name, never a path.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

from benchmark.storage.cache import (
    ENTRY_NAME,
    KINDS,
    MARKER,
    PROVISIONED,
    TEMP_NAME,
    CacheEntry,
    CacheError,
    check_kind,
    read_entry,
    spec_key,
)

if TYPE_CHECKING:
    from benchmark.storage.cache import Cache


def _kinds(kinds: Iterable[str] | None) -> list[str]:
    return [check_kind(k) for k in kinds] if kinds is not None else list(KINDS)


def _kind_dir(root: Path, kind: str) -> Path | None:
    """The folder of ``kind`` if it is a real folder (a symbolic link is never followed)."""
    folder = root / kind
    return folder if folder.is_dir() and not folder.is_symlink() else None


def _key(path: Path) -> tuple[str | None, str]:
    stem = path.name[: -len(".safetensors")]
    name, _, key = stem.rpartition("-")
    return (name or None), key


def entries(cache: "Cache", kinds: Iterable[str] | None = None) -> Iterator[CacheEntry]:
    """Entry files of the given kinds (sorted), with the spec their metadata stores."""
    from safetensors import safe_open

    for kind in _kinds(kinds):
        folder = _kind_dir(cache.root, kind)
        if folder is None:
            continue
        for path in sorted(folder.iterdir()):
            if not ENTRY_NAME.match(path.name) or not path.is_file() or path.is_symlink():
                continue
            try:
                with safe_open(str(path), framework="pt") as f:
                    spec = json.loads((f.metadata() or {}).get("spec", "{}"))
            except Exception:  # a listing never fails on a bad file
                spec = {"error": "unreadable"}
            yield CacheEntry(kind, _key(path)[1], path, path.stat().st_size, spec)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


@dataclass(frozen=True)
class Folder:
    """A top-level item of the root, for ``cache ls``."""

    name: str
    role: str  # "kind", "provisioned" or "not cache"
    entries: int
    bytes: int
    description: str


def folders(cache: "Cache") -> list[Folder]:
    """Every registered kind (present or not), provisioned data and foreign items in the root."""
    root = cache.root
    out = []
    for kind, what in KINDS.items():
        found = list(entries(cache, [kind]))
        out.append(Folder(kind, "kind", len(found), sum(e.bytes for e in found), what))
    if root.is_dir():
        for name, what in PROVISIONED.items():
            if (root / name).exists():
                out.append(Folder(name, "provisioned", 0, _size(root / name), what))
        for path in sorted(root.iterdir()):
            if path.name not in KINDS and path.name not in PROVISIONED and path.name != MARKER:
                out.append(Folder(path.name, "not cache", 0, 0, "not written by the cache; never cleared"))
    return out


def _check_clearable(root: Path) -> bool:
    """True when there is something to clear; CacheError when the root is not ours."""
    if not root.exists():
        return False
    if not root.is_dir():
        raise CacheError(f"cache root {root} is a file, not a folder")
    if (root / MARKER).is_file():
        return True
    if not any(root.iterdir()):
        return False
    raise CacheError(f"{root} has no {MARKER} marker, so it may not be a polysemy-bench cache: nothing "
                     f"removed. If it is one (written by an older version), create the marker file "
                     f"(touch {root / MARKER}) and clear again")


def clear(cache: "Cache", kind: str | None = None) -> int:
    """Delete the entry files (and leftover temp files) of ``kind`` or of every kind;
    returns how many files were removed."""
    if kind is not None and (Path(kind).is_absolute() or "/" in kind or "\\" in kind or kind in ("..", ".")):
        raise CacheError(f"cache kind {kind!r} must be a kind name, not a path. Kinds: {', '.join(KINDS)}")
    kinds = _kinds(None if kind is None else [kind])
    if not _check_clearable(cache.root):
        return 0
    removed = 0
    for k in kinds:
        folder = _kind_dir(cache.root, k)
        if folder is None:
            continue
        for path in folder.iterdir():
            if (ENTRY_NAME.match(path.name) or TEMP_NAME.match(path.name)) and path.is_file() and not path.is_symlink():
                path.unlink()
                removed += 1
        try:
            folder.rmdir()  # only when nothing else is left in it
        except OSError:
            pass
    return removed


@dataclass(frozen=True)
class Problem:
    entry: CacheEntry
    reason: str


def verify(cache: "Cache", remove: bool = False) -> tuple[int, list[Problem]]:
    """Read every entry and check its payload checksum and that its name is the key of
    its stored spec; returns (entries checked, problems). ``remove`` deletes the bad ones
    (they would be recomputed on their next use anyway)."""
    problems, checked = [], 0
    for entry in list(entries(cache)):
        checked += 1
        try:
            _tensors, meta = read_entry(entry.path)
            spec = json.loads(meta.get("spec", "null"))
            name = _key(entry.path)[0]
            expected = spec_key({"name": name, **spec} if name else spec)
            if expected != entry.key:
                raise ValueError("stored spec does not match the file name (key)")
        except (ValueError, TypeError) as err:
            problems.append(Problem(entry, str(err)))
            if remove:
                entry.path.unlink(missing_ok=True)
    return checked, problems
