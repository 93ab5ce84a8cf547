"""Content-addressed cache of computed tensors (capture statistics, attributions, weights).

An entry's key is the SHA-256 of a canonical JSON *spec*: statistic kind, model and weights
identity, layer, dataset and transform, parameters, the package version and a fingerprint
of the source of the modules that compute the entry (:func:`code_fingerprint`). Entries are
safetensors files whose metadata repeats the spec and holds a SHA-256 checksum of the
payload (every tensor's name, dtype, shape and bytes); writes are atomic (temp file +
rename). A file that cannot be read, whose checksum does not match its tensors, or whose
stored spec differs from the request is recomputed with a warning and never used.

The root is ``$POLYSEMY_CACHE`` or ``~/.cache/polysemy-bench``. It carries a marker file
(:data:`MARKER`) written with its first entry; a folder that holds anything else and no
marker is refused, so the cache never writes into (or clears) a folder that is not its own.
Administration (``ls``, ``clear``, ``verify``) lives in :mod:`benchmark.storage.cache_admin`,
which imports this module (never the other way round).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch
from torch import Tensor, nn

from benchmark import __version__
from benchmark.core.errors import PolysemyError
from benchmark.storage.fingerprints import closure_fingerprint, code_fingerprint  # noqa: F401 (re-exported)

if TYPE_CHECKING:  # pragma: no cover
    from benchmark.core.memo import RunMemo

CACHE_ENV = "POLYSEMY_CACHE"
MARKER = ".polysemy-bench-cache"
MARKER_TEXT = "polysemy-bench cache (format 2). `polysemy cache clear` removes only the entries it wrote.\n"

# Entry kinds: folder name -> what it holds. Only these folders are ever written or cleared.
KINDS: dict[str, str] = {
    "capture": "capture statistics of one (model, layer, dataset) pass",
    "world": "trained weights of the synthetic world's CNN and judge",
    "pure_attributions": "PURE attribution vectors of a channel's reference images",
    "functional_planting": "fine-tuned weights after the planted layer (functional planting)",
    "pure_crop_boxes": "PURE crop boxes of a channel's shared reference pool (embedding separation)",
    "fvis_embeddings": "embedded feature visualisations of one run unit's virtual neurons",
    "fvis_images": "feature visualisations of the fvis_grid figure (per run unit, or per channel)",
    "sae_dictionaries": "sparse autoencoders trained on a layer's sampled output vectors (method sae)",
    "tau_calibration": "the ARV importance threshold tau calibrated for one (model, layer) on the fit split",
    "unit_results": "a finished run unit's rows, split card, thumbnails and trace (benchmark.run.unit_store)",
    "planting_checks": "held-out accuracies and part shares of the planted track's validity filter",
}
# The modules that compute an entry of a kind. The key holds the fingerprint of these modules
# AND of every module they import, directly or not (benchmark.storage.fingerprints reads the
# import graph), so editing any code an entry depends on gives it a new key. The world's
# weights add the model's module (benchmark.sources.world.training.WORLD_CODE).
KIND_CODE: dict[str, tuple[str, ...]] = {
    "capture": ("benchmark.engine.capture", "benchmark.engine.layer_stats"),
    "pure_attributions": ("benchmark.engine.attribution", "benchmark.engine.attribution_backends", "methods.pure"),
    "functional_planting": ("benchmark.planting.functional",),
    "planting_checks": ("benchmark.planting.checks",),
    "sae_dictionaries": ("methods.sae",),
    "tau_calibration": ("benchmark.engine.tau_calibration",),
    "pure_crop_boxes": ("benchmark.engine.crops", "benchmark.engine.attribution_backends", "metrics._crop_boxes"),
    "fvis_embeddings": ("benchmark.engine.fvis._common", "benchmark.engine.fvis._objectives", "benchmark.engine.fvis.maco",
                        "metrics.embedding_separation"),
    "fvis_images": ("benchmark.engine.fvis._common", "benchmark.engine.fvis._objectives", "benchmark.engine.fvis.maco",
                    "benchmark.engine.fvis.lucent_fv", "benchmark.reporting.run_figures"),
}
# Folders that may sit in the root but are not cache entries: listed, never cleared.
PROVISIONED: dict[str, str] = {
    "nltk_data": "WordNet provisioned for nltk (python -m benchmark.sources.wordnet_setup); never cleared",
    "tuxpaint-stamps": "photo stamps of the real track (python -m benchmark.sources.photos.setup); never cleared",
}
ENTRY_NAME = re.compile(r"^(?:[a-z][a-z0-9_]*-)?[0-9a-f]{32}\.safetensors$")
TEMP_NAME = re.compile(r"^\.(?:[a-z][a-z0-9_]*-)?[0-9a-f]{32}\.safetensors\.[A-Za-z0-9_]+\.tmp$")


class CacheError(PolysemyError, RuntimeError):
    """The cache root cannot be used (not a polysemy-bench cache, not writable, ...)."""


def register_kind(name: str, description: str, code: tuple[str, ...] = ()) -> None:
    """Declare a new entry kind (a folder under the root that ``clear`` may empty) and the
    modules whose code computes its entries (fingerprinted into every key)."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or name in PROVISIONED:
        raise ValueError(f"invalid cache kind {name!r}: lower-case letters, digits and _ only")
    KINDS[name] = description
    KIND_CODE[name] = tuple(code)


def check_kind(kind: str) -> str:
    """``kind`` if it is a registered kind, else a CacheError listing them (close-name hint)."""
    import difflib

    if kind in KINDS:
        return kind
    close = difflib.get_close_matches(kind, KINDS, n=2)
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    raise CacheError(f"unknown cache kind {kind!r}.{hint} Kinds: {', '.join(KINDS)}")


def cache_root() -> Path:
    """The cache folder: ``$POLYSEMY_CACHE`` if set, else ``~/.cache/polysemy-bench``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "polysemy-bench").expanduser()


def atomic_write(path: Path | str, write: Callable[[Path], object]) -> Path:
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


def payload_checksum(tensors: Mapping[str, Tensor]) -> str:
    """SHA-256 of every tensor's name, dtype, shape and bytes (sorted by name)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy())  # type: ignore[arg-type]  # ndarray is a buffer
    return digest.hexdigest()


def model_fingerprint(model: nn.Module, memo: "RunMemo | None" = None) -> str:
    """Identity of a model's architecture and weights (hash of its state dict); with a
    run's ``memo`` (``context.memo``) computed once per model object in that run."""
    if memo is not None:
        return memo.get("model_fingerprint", (model,), (), lambda: model_fingerprint(model), size=16)
    digest = hashlib.sha256(type(model).__qualname__.encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy())  # type: ignore[arg-type]  # ndarray is a buffer; 0-dim reshaped first
    return digest.hexdigest()[:24]


def _foreign_children(root: Path) -> list[str]:
    """Names in ``root`` that a polysemy-bench cache does not put there."""
    ours = set(KINDS) | set(PROVISIONED) | {MARKER}
    ours_hidden = (".polysemy", "..polysemy")  # the marker's and the write probe's temp files
    return sorted(p.name for p in root.iterdir() if p.name not in ours and not p.name.startswith(ours_hidden))


def ensure_root(root: Path) -> Path:
    """Make ``root`` a usable cache folder (created and marked if new or empty; an unmarked
    folder holding only cache folders is adopted); a specific CacheError otherwise."""
    root = Path(root)
    marker = root / MARKER
    if root.exists() and not root.is_dir():
        raise CacheError(f"cache root {root} is a file, not a folder (set ${CACHE_ENV} to a folder)")
    if not marker.is_file():
        if root.is_dir():
            foreign = _foreign_children(root)
            if foreign:
                shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
                raise CacheError(f"{root} is not a polysemy-bench cache (it holds {shown} and no {MARKER} "
                                 f"marker); set ${CACHE_ENV} to an empty or new folder")
        try:
            root.mkdir(parents=True, exist_ok=True)
            atomic_write_text(marker, MARKER_TEXT)
        except OSError as err:
            raise CacheError(f"cache root {root} is not writable ({err.strerror or err}); "
                             f"set ${CACHE_ENV} to a writable folder") from None
    return root


def check_writable(root: Path) -> None:
    """Fail fast (before any computation) when the cache cannot store entries."""
    ensure_root(root)
    try:
        fd, probe = tempfile.mkstemp(dir=root, prefix=".polysemy-probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise CacheError(f"cache root {root} is not writable ({err.strerror or err}); "
                         f"set ${CACHE_ENV} to a writable folder") from None


def save_entry(path: Path, spec_json: str, tensors: Mapping[str, Tensor], extra: Mapping[str, str] = {}) -> Path:
    """Write ``tensors`` atomically with the spec, a payload checksum and ``extra`` metadata."""
    from safetensors.torch import save_file

    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {"spec": spec_json, "sha256": payload_checksum(contiguous),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra}
    try:
        return atomic_write(path, lambda p: save_file(contiguous, str(p), metadata=meta))
    except OSError as err:
        raise CacheError(f"cannot write cache entry {path}: {err.strerror or err}") from None


def read_entry(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """(tensors, metadata) of an entry; ValueError when unreadable or the checksum fails."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ValueError(f"unreadable ({err})") from None
    if "sha256" not in meta:
        raise ValueError("no payload checksum (written by an older version)")
    if payload_checksum(tensors) != meta["sha256"]:
        raise ValueError("payload checksum mismatch (the data was altered after writing)")
    return tensors, meta


def load_entry(path: Path, spec_json: str, what: str = "cache file") -> tuple[dict[str, Tensor], dict[str, str]] | None:
    """The entry at ``path`` if present, intact and stored for ``spec_json``; None (with a
    warning when a file was there) otherwise."""
    if not path.exists():
        return None
    try:
        tensors, meta = read_entry(path)
    except ValueError as err:
        warnings.warn(f"{what} {path} is corrupted: {err}; recomputing", stacklevel=3)
        return None
    if meta.get("spec") != spec_json:
        warnings.warn(f"{what} {path} was stored for a different request; recomputing", stacklevel=3)
        return None
    return tensors, meta


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
        self.root = Path(root).expanduser() if root is not None else cache_root()
        self.hits = 0
        self.misses = 0

    def _full_spec(self, kind: str, spec: Mapping[str, Any]) -> dict:
        code = KIND_CODE.get(check_kind(kind), ())
        return {"kind": kind, "version": __version__, **({"code": closure_fingerprint(*code)} if code else {}), **spec}

    def path(self, kind: str, spec: Mapping[str, Any], suffix: str = ".safetensors") -> Path:
        return self.root / kind / f"{spec_key(self._full_spec(kind, spec))}{suffix}"

    def load(self, kind: str, spec: Mapping[str, Any]) -> dict[str, Tensor] | None:
        """The stored tensors, or None when absent, corrupted or stored for another spec."""
        found = load_entry(self.path(kind, spec), canonical_json(self._full_spec(kind, spec)))
        return None if found is None else found[0]

    def save(self, kind: str, spec: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> Path:
        ensure_root(self.root)
        return save_entry(self.path(kind, spec), canonical_json(self._full_spec(kind, spec)), tensors)

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
