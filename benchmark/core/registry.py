"""Name -> plug-in registries (methods, metrics, models, datasets, embedders, feature
visualisation backends).

A registry is a dict plus a decorator, in the spirit of timm's ``register_model`` and
zennit's small registries.  Plug-in packages (``methods``, ``metrics``) register their
entries when imported; :func:`load_plugins` imports them so that the harness never names
a concrete method or metric.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import pkgutil
from dataclasses import MISSING, fields, is_dataclass
from typing import Any, Callable, Iterator, TypeVar

from benchmark.core.errors import PolysemyError
from benchmark.core.plugins import Embedder, Method, Metric

T = TypeVar("T")


class UnknownNameError(PolysemyError, KeyError):
    """A name that is not in a registry; the message lists what is available."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


class Registry:
    """A named collection of plug-ins: ``@REG.register("name")`` and ``REG.get("name")``."""

    def __init__(self, kind: str, base: type | None = None):
        self.kind = kind
        self.base = base  # entries must subclass it (the declared plug-in interface)
        self._entries: dict[str, Any] = {}

    def register(self, name: str, description: str | None = None) -> Callable[[T], T]:
        """Decorator adding ``obj`` under ``name``; the description defaults to the
        first line of its docstring."""

        def add(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            if self.base is not None:
                if not (isinstance(obj, type) and issubclass(obj, self.base)):
                    raise TypeError(f"{self.kind} {name!r} must subclass {self.base.__module__}."
                                    f"{self.base.__qualname__} (it declares what the harness reads)")
                obj._registry_name = name  # type: ignore[attr-defined]
            self._entries[name] = obj
            if description is not None:
                setattr(obj, "__registry_description__", description)
            return obj

        return add

    def get(self, name: str) -> Any:
        load_plugins()
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._entries, n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}.{hint} Available: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, Any]]:
        return [(n, self._entries[n]) for n in self.names()]

    def describe(self, name: str) -> str:
        """One line: the entry's description plus, for dataclasses, its fields and defaults."""
        obj = self.get(name)
        text = getattr(obj, "__registry_description__", None) or inspect.getdoc(obj) or ""
        line = text.strip().splitlines()[0] if text.strip() else ""
        params = hyperparameters(obj)
        if params:
            line += "  [" + ", ".join(f"{k}={v!r}" for k, v in params.items()) + "]"
        return line


def hyperparameters(obj: Any) -> dict[str, Any]:
    """Field name -> value (instance) or default (class) of a dataclass; empty for anything
    else. Fields declared with ``compare=False`` (derived data such as tensors) are skipped."""
    if not is_dataclass(obj):
        return {}
    if not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in fields(obj) if f.init and f.compare}
    out: dict[str, Any] = {}
    for f in fields(obj):
        if not f.init or not f.compare:
            continue
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
        else:
            out[f.name] = "<required>"
    return out


METHODS = Registry("method", base=Method)
METRICS = Registry("metric", base=Metric)
MODELS = Registry("model")
DATASETS = Registry("dataset")
EMBEDDERS = Registry("embedder", base=Embedder)
FEATURE_VIS = Registry("feature-visualisation backend")
# model name -> zero-argument builder of its untrained architecture (same module names as the
# trained model): the pre-flight checks read layer names from it in a second, before any
# training or weight loading. Optional per model; not listed by `polysemy list`.
ARCHITECTURES = Registry("model architecture")

ALL_REGISTRIES: dict[str, Registry] = {
    "methods": METHODS,
    "metrics": METRICS,
    "models": MODELS,
    "datasets": DATASETS,
    "embedders": EMBEDDERS,
    "feature_vis": FEATURE_VIS,
}

# Packages whose every submodule registers plug-ins when imported.
PLUGIN_PACKAGES = ("benchmark.sources.zoo", "benchmark.sources.embedders", "benchmark.engine.fvis", "methods", "metrics")
_loaded = False


def load_plugins() -> None:
    """Import every module of the plug-in packages once (a new method is one new file;
    modules whose name starts with ``_`` are helpers and are not auto-imported)."""
    global _loaded
    if _loaded:
        return
    _loaded = True  # set first: plug-in modules may call registry functions on import
    try:
        for package_name in PLUGIN_PACKAGES:
            package = importlib.import_module(package_name)
            for info in pkgutil.iter_modules(package.__path__):
                if not info.name.startswith("_"):
                    importlib.import_module(f"{package_name}.{info.name}")
    except BaseException:
        _loaded = False
        raise
