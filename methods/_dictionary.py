"""Shared construction of *dictionary* splits (the SAE and NMF methods).

A dictionary method writes the target channel as a sum of atom contributions plus what no
atom carries. It groups the atoms into k groups; virtual neuron i is the summed contribution
of group i's atoms, the residual is the rest, so ``orig = sum_i v_i + res`` (the dictionary
recomposition of :mod:`benchmark.core.types`). Both maps come from ONE function
``parts_fn(images) -> (N, k + 1, H, W)`` (k virtual neurons, then the residual), evaluated
once per image through :class:`benchmark.engine.memo.ImageMemo` when no gradient is asked.

References: each of the channel's reference images goes to the group with the largest
positive spatial mass on it (the group that drives the channel there); a group's references
are ordered by that mass. A group that wins no reference keeps its ``FALLBACK_REFS`` best
references by mass, so every virtual neuron has references to look at.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from benchmark.core.types import Split, Target
from benchmark.engine.memo import ImageMemo

FALLBACK_REFS = 10


def dictionary_split(*, target: Target, method: str, k: int, parts_fn: Callable[[Tensor], Tensor],
                     reference_ids: tuple[tuple[int, ...], ...], info: Mapping[str, Any] | None = None) -> Split:
    """A Split (recomposition ``dictionary``) whose virtual neurons are ``parts_fn(x)[:, :k]``
    and residual ``parts_fn(x)[:, k]``."""
    both = ImageMemo(parts_fn)

    def virtual(images: Tensor) -> Tensor:
        return both(images)[:, :k]

    def residual(images: Tensor) -> Tensor:
        return both(images)[:, k]

    return Split(target=target, method=method, k=k, recomposition="dictionary", virtual_fn=virtual,
                 residual_fn=residual, reference_ids=reference_ids, info=dict(info or {}))


def group_references(mass_nk: Tensor, ids: Tensor) -> tuple[tuple[int, ...], ...]:
    """Reference ids per group from the (n, k) positive spatial mass of each group on the
    references ``ids`` (n,): argmax assignment (ties -> lower group), ordered by mass."""
    mass = mass_nk.double()
    owner = torch.argmax(mass, dim=1)
    groups = []
    for i in range(mass.shape[1]):
        members = torch.nonzero(owner == i).flatten()
        if members.numel() == 0:
            members = torch.argsort(-mass[:, i], stable=True)[:FALLBACK_REFS]
        order = members[torch.argsort(-mass[members, i], stable=True)]
        groups.append(tuple(int(ids[j]) for j in order.tolist()))
    return tuple(groups)
