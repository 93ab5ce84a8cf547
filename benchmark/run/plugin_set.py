"""The configured methods and metrics of a run: registry names resolved into instances with
their parameters (the run's method seed handed to plug-ins with a ``seed`` field)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from benchmark.core.config import ConfigError
from benchmark.core.plugins import Metric
from benchmark.core.registry import Registry, hyperparameters
from benchmark.run.preflight import check_param_types
from benchmark.storage.cache import canonical_json


@dataclass(frozen=True)
class Plugin:
    """A configured method or metric instance with its registry name and label."""

    name: str
    instance: Any

    @property
    def params_json(self) -> str:
        return canonical_json(hyperparameters(self.instance))

    @property
    def label(self) -> str:
        """A metric's table label (parameterised metrics add a key parameter); a method's name."""
        return self.instance.label if isinstance(self.instance, Metric) else self.name


def resolve(registry: Registry, names: Iterable[str], params: dict, seed: int | None = None) -> list[Plugin]:
    """Instances of the requested plug-ins (``"all"`` = every registered one). With ``seed``,
    a plug-in with a ``seed`` field gets it unless its parameters name one."""
    names = list(names)
    chosen = registry.names() if names == ["all"] else names
    for key in params:
        registry.get(key)  # parameters for an unknown name are an error; for an unselected one, unused
    out = []
    for name in chosen:
        cls = registry.get(name)
        kwargs = dict(params.get(name, {}))
        valid = set(hyperparameters(cls))
        if seed is not None and "seed" in valid:
            kwargs.setdefault("seed", seed)
        unknown = sorted(set(kwargs) - valid)
        if unknown:
            raise ConfigError(f"unknown parameter(s) {', '.join(unknown)} for {registry.kind} {name!r}; "
                              f"valid: {', '.join(sorted(valid)) or '(none)'}")
        check_param_types(cls, kwargs, f"{registry.kind} {name!r}")
        try:
            out.append(Plugin(name, cls(**kwargs)))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{registry.kind} {name!r}: {err}") from None
    return out
