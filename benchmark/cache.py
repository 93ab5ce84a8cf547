"""Content-addressed cache of computed tensors (capture statistics, attributions, weights).

An entry's key is the SHA-256 of a canonical JSON *spec*: statistic kind, model and weights
identity, layer, dataset and transform, parameters and a code version. Entries are
safetensors files whose metadata repeats the spec; writes are atomic (temp file + rename).
A corrupted file, or one whose stored spec differs from the request, is recomputed with a
warning and never used. The root is ``$POLYSEMY_CACHE`` or ``~/.cache/polysemy-bench``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import Tensor, nn

from benchmark import __version__

CACHE_ENV = "POLYSEMY_CACHE"


def cache_root() -> Path:
    """The cache folder: ``$POLYSEMY_CACHE`` if set, else ``~/.cache/polysemy-bench``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "polysemy-bench")


def atomic_write(path: Path | str, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path | str, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def canonical_json(spec: Mapping[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)


def spec_key(spec: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()[:32]


_fingerprints: "weakref.WeakKeyDictionary[nn.Module, str]" = weakref.WeakKeyDictionary()


def model_fingerprint(model: nn.Module) -> str:
    """Identity of a model's architecture and weights (hash of its state dict)."""
    cached = _fingerprints.get(model)
    if cached is not None:
        return cached
    digest = hashlib.sha256(type(model).__qualname__.encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy())  # 0-dim buffers reshaped first
    fp = digest.hexdigest()[:24]
    _fingerprints[model] = fp
    return fp


@dataclass(frozen=True)
class CacheEntry:
    kind: str
    key: str
    path: Path
    bytes: int
    spec: dict


class Cache:
    """Tensor cache under ``root/<kind>/<key>.safetensors``; counts hits and misses."""

    def __init__(self, root: Path | str | None = None):
        self.root = Path(root) if root is not None else cache_root()
        self.hits = 0
        self.misses = 0

    def path(self, kind: str, spec: Mapping[str, Any], suffix: str = ".safetensors") -> Path:
        full = {"kind": kind, "version": __version__, **spec}
        return self.root / kind / f"{spec_key(full)}{suffix}"

    def load(self, kind: str, spec: Mapping[str, Any]) -> dict[str, Tensor] | None:
        """The stored tensors, or None when absent, corrupted or stored for another spec."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        from safetensors import safe_open

        path = self.path(kind, spec)
        if not path.exists():
            return None
        expected = canonical_json({"kind": kind, "version": __version__, **spec})
        try:
            with safe_open(str(path), framework="pt") as f:
                stored = (f.metadata() or {}).get("spec")
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            warnings.warn(f"cache file {path} is corrupted ({err}); recomputing", stacklevel=3)
            return None
        if stored != expected:
            warnings.warn(f"cache file {path} was stored for a different request; recomputing", stacklevel=3)
            return None
        return tensors

    def save(self, kind: str, spec: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> Path:
        from safetensors.torch import save_file

        meta = {"spec": canonical_json({"kind": kind, "version": __version__, **spec}),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        return atomic_write(self.path(kind, spec), lambda p: save_file(contiguous, str(p), metadata=meta))

    def get_or_compute(
        self, kind: str, spec: Mapping[str, Any], compute: Callable[[], Mapping[str, Tensor]]
    ) -> dict[str, Tensor]:
        found = self.load(kind, spec)
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1
        tensors = dict(compute())
        self.save(kind, spec, tensors)
        return tensors

    def entries(self) -> Iterator[CacheEntry]:
        from safetensors import safe_open

        if not self.root.exists():
            return
        for path in sorted(self.root.glob("*/*")):
            if path.name.startswith(".") or not path.is_file():
                continue
            spec: dict = {}
            if path.suffix == ".safetensors":
                try:
                    with safe_open(str(path), framework="pt") as f:
                        spec = json.loads((f.metadata() or {}).get("spec", "{}"))
                except Exception:  # a listing never fails on a bad file
                    spec = {"error": "unreadable"}
            yield CacheEntry(path.parent.name, path.stem, path, path.stat().st_size, spec)

    def clear(self, kind: str | None = None) -> int:
        """Delete every entry (or those of one kind); returns how many files were removed."""
        target = self.root / kind if kind else self.root
        if not target.exists():
            return 0
        count = sum(1 for p in target.rglob("*") if p.is_file())
        shutil.rmtree(target)
        return count
