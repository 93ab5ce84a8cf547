"""Shared construction of *gating* splits (PURE, activation clustering, baselines).

A gating method assigns each input image soft or hard weights ``w_i(x)`` over k virtual
neurons with ``sum_i w_i(x) = 1``; virtual neuron i is ``w_i(x) * orig(x)`` where ``orig`` is
the target channel's activation map, so the virtual neurons always sum to the original
channel (the gating recomposition of DESIGN.md).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from benchmark.core.memo import RunMemo
from benchmark.core.types import Split, Target
from benchmark.engine.layers import channel_activation
from benchmark.engine.memo import ImageMemo

# context.memo section: (model, layer, channel) -> per-image memo of the channel's map: every
# gating method of a target multiplies the SAME original map, so a run computes it once per image
MEMO_SECTION, MEMO_SIZE = "channel_map", 4


def shared_channel_map(model: nn.Module, layer: str, channel: int,
                       memo: RunMemo | None = None) -> Callable[[Tensor], Tensor]:
    """``images -> (N, H, W)`` map of the channel, memoised per image (in no-grad mode) and
    shared, through the run's ``memo``, by every split of the same (model, layer, channel)."""
    if memo is None:
        return _channel_map(model, layer, channel)
    return memo.get(MEMO_SECTION, (model,), (layer, int(channel)), lambda: _channel_map(model, layer, channel),
                    MEMO_SIZE)


def _channel_map(model: nn.Module, layer: str, channel: int) -> Callable[[Tensor], Tensor]:
    memo = ImageMemo(lambda images: channel_activation(model, layer, channel, images))

    def channel_map(images: Tensor) -> Tensor:
        if torch.is_grad_enabled():  # a caller that may differentiate gets a fresh graph
            return channel_activation(model, layer, channel, images)
        return memo(images)

    return channel_map


def gated_split(
    *,
    target: Target,
    method: str,
    model: nn.Module,
    gates_fn: Callable[[Tensor], Tensor],
    k: int,
    reference_ids: Sequence[Sequence[int]] = (),
    concepts: tuple[tuple[int, ...], ...] | None = None,
    directions: Tensor | None = None,
    info: Mapping[str, Any] | None = None,
    memo: RunMemo | None = None,
) -> Split:
    """A Split whose virtual neuron i is ``gates_fn(x)[:, i] * orig(x)``.

    ``gates_fn(images) -> (N, k)`` must return non-negative weights summing to 1 per image;
    it is treated as a constant (detached) so the virtual neurons stay differentiable
    through the original channel only. ``memo`` (the context's) lets every gating split of
    a target share one per-image memo of the original channel.
    """

    original = shared_channel_map(model, target.layer, target.channel, memo)

    def virtual(images: Tensor) -> Tensor:
        orig = original(images)  # (N, H, W)
        gates = gates_fn(images).detach().to(orig.dtype)
        if gates.shape != (images.shape[0], k):
            raise RuntimeError(f"{method}: gates have shape {tuple(gates.shape)}, expected ({images.shape[0]}, {k})")
        return gates[:, :, None, None] * orig[:, None]

    return Split(
        target=target, method=method, k=k, recomposition="gating", virtual_fn=virtual,
        reference_ids=tuple(tuple(int(i) for i in ids) for ids in reference_ids),
        concepts=concepts, model=None, directions=directions, info=dict(info or {}),
    )


def one_hot_gates(assignment: Tensor, k: int) -> Tensor:
    """(N,) cluster ids -> (N, k) hard gates."""
    return torch.nn.functional.one_hot(assignment.long(), k).float()


def nearest_centroid(features_nd: Tensor, centroids_kd: Tensor) -> Tensor:
    """(N,) index of the nearest centroid (Euclidean) for each row."""
    return torch.cdist(features_nd.float(), centroids_kd.float()).argmin(dim=1)
