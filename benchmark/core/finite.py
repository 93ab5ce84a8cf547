"""Detection of non-finite values (NaN, inf) in activations, attributions and logits.

One NaN weight propagates silently: NaN compares false, ``max`` and ``argmax`` skip or
pick it, and a run can end with plausible-looking numbers. The capture pass checks every
batch (:func:`check_finite`) and stops with an error naming the model, the layer, what was
non-finite and the first affected images; metrics refuse non-finite inputs as "not
applicable: non-finite values" (:func:`non_finite_reason`).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from benchmark.core.errors import PolysemyError

SHOWN = 5


class NonFiniteError(PolysemyError, RuntimeError):
    """NaN or inf values where finite ones are required (the message names where)."""


def bad_rows(values: Tensor) -> Tensor:
    """Boolean mask over the first dimension: rows holding any NaN or inf."""
    return ~torch.isfinite(values.detach()).reshape(values.shape[0], -1).all(dim=1)


def describe(values: Tensor) -> str:
    """'NaN', 'inf' or 'NaN and inf', whichever ``values`` holds."""
    kinds = [name for name, present in (("NaN", bool(torch.isnan(values).any())),
                                        ("inf", bool(torch.isinf(values).any()))) if present]
    return " and ".join(kinds) or "no non-finite values"


def check_finite(values: Tensor, what: str, model: str, layer: str, image_ids: Sequence[int] | Tensor) -> None:
    """Raise NonFiniteError when ``values`` (first dim = images) holds NaN or inf."""
    rows = bad_rows(values)
    if bool(rows.any()):
        raise_non_finite(torch.as_tensor(image_ids).reshape(-1)[rows.cpu()].tolist(),
                         f"{what} ({describe(values[rows])})", model, layer)


def raise_non_finite(image_ids: Sequence[int], what: str, model: str, layer: str) -> None:
    """The NonFiniteError for ``what`` on ``image_ids`` (dataset indices)."""
    ids = list(image_ids)
    shown = ", ".join(str(i) for i in ids[:SHOWN]) + (f" (+{len(ids) - SHOWN} more)" if len(ids) > SHOWN else "")
    raise NonFiniteError(f"model {model!r}, layer {layer!r}: non-finite {what} on {len(ids)} image(s) "
                         f"({shown}, dataset indices); check the model's weights and inputs")


class FiniteWatch:
    """Flags images with non-finite values batch by batch without a host-device sync per
    batch; :meth:`check` raises once at the end, naming every affected image."""

    def __init__(self, size: int, device: torch.device):
        self.size, self.device = size, device
        self.flags: dict[str, Tensor] = {}

    def add(self, what: str, values: Tensor, ids: Tensor) -> None:
        flags = self.flags.setdefault(what, torch.zeros(self.size, dtype=torch.bool, device=self.device))
        flags[ids.to(self.device)] |= bad_rows(values).to(self.device)

    def check(self, model: str, layer: str) -> None:
        for what, flags in self.flags.items():
            if bool(flags.any()):
                raise_non_finite(flags.nonzero().flatten().tolist(), f"{what} (NaN or inf)", model, layer)


def non_finite_reason(**named: Tensor) -> str | None:
    """None when every tensor is finite, else 'non-finite values: ...' naming which."""
    bad = [f"{name} ({describe(t)})" for name, t in named.items() if not bool(torch.isfinite(t).all())]
    return f"non-finite values: {', '.join(bad)}" if bad else None
