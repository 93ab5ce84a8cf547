"""Loading a state dict into a model with an error that names the file and the mismatch.

PyTorch's ``load_state_dict`` error lists every missing and unexpected key and every shape
mismatch in one long dump without the file name; :func:`load_state` says which file does
not fit which model and shows only the first few differences (expected vs found shapes).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from torch import Tensor, nn

from benchmark.core.errors import PolysemyError

SHOWN = 3


class CheckpointError(PolysemyError, ValueError):
    """A weights file that cannot be read or does not fit the model."""


def mismatch_summary(model: nn.Module, state: Mapping[str, Tensor]) -> str:
    """The first differences between ``model``'s state dict and ``state`` ('' when they fit)."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(getattr(v, "shape", ())) for k, v in state.items()}
    shapes = [f"{k} expected {list(expected[k])}, found {list(found[k])}"
              for k in expected if k in found and expected[k] != found[k]]
    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    parts = []
    for label, items in (("shape mismatch", shapes), ("missing keys", missing), ("unexpected keys", extra)):
        if items:
            more = f" (+{len(items) - SHOWN} more)" if len(items) > SHOWN else ""
            parts.append(f"{label}: {'; '.join(items[:SHOWN])}{more}")
    return "; ".join(parts)


def load_state(model: nn.Module, state: Mapping[str, Tensor], path: Path | str, what: str | None = None) -> nn.Module:
    """``model.load_state_dict(state)``, or a CheckpointError naming ``path`` and the mismatch."""
    name = what or type(model).__name__
    if not isinstance(state, Mapping) or not all(hasattr(v, "shape") for v in state.values()):
        raise CheckpointError(f"weights file {path} does not hold a state dict of tensors (expected for {name})")
    summary = mismatch_summary(model, state)
    if summary:
        raise CheckpointError(f"weights file {path} does not fit {name}: {summary}")
    model.load_state_dict(state)
    return model
