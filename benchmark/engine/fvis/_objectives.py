"""Batched feature-visualisation objectives: ``objective(images_nchw) -> (N,)``.

Image ``i`` of a batch is scored for objective ``i``, so several neurons are optimised in
one batch (the convention of Lucid's ``batch`` parameterisation, Olah et al. 2017).
The three helpers score

* an original channel: mean over space of channel ``c`` of module ``layer``;
* a virtual neuron of a :class:`~benchmark.core.types.Split`: mean over space of
  ``split.activations(x)[:, i]``;
* a direction ``v`` in a layer's channel space: mean over space of
  ``<v, a(:, :, h, w)>`` (concept vectors, O'Mahony et al. 2023).

Activations are read with a forward hook that is removed in ``finally`` and the model's
train/eval flags are restored afterwards, so the caller's model is never changed.  The
forward pass stops at the hooked module (later layers are not computed).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from benchmark.engine.layers import eval_mode, get_layer, layer_activations

Objective = Callable[[Tensor], Tensor]


def module_output(model: nn.Module, layer: str, images: Tensor) -> Tensor:
    """Output of module ``layer`` for ``images`` in eval mode (differentiable; the forward
    stops there; the model's hooks and flags are restored afterwards)."""
    with eval_mode(model):
        return layer_activations(model, layer, images)


def _per_image_index(index: int | Sequence[int] | Tensor, n: int, what: str) -> Tensor:
    """Broadcast an int to ``n`` images, or check a sequence has one entry per image."""
    idx = torch.as_tensor(index, dtype=torch.long).reshape(-1)
    if idx.numel() == 1:
        return idx.expand(n)
    if idx.numel() != n:
        raise ValueError(f"got {idx.numel()} {what} for a batch of {n} images; "
                         f"give one {what[:-1]} per image or a single one for all")
    return idx


def _spatial_mean(acts: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, C); (N, C) passes through (e.g. a linear layer)."""
    if acts.dim() == 4:
        return acts.mean(dim=(2, 3))
    if acts.dim() == 2:
        return acts
    raise ValueError(f"expected activations of shape (N, C, H, W) or (N, C), got {tuple(acts.shape)}")


def channel_objective(model: nn.Module, layer: str, channels: int | Sequence[int]) -> Objective:
    """Score image i by the mean spatial activation of ``channels[i]`` at ``layer``
    (one int: the same channel for every image)."""
    get_layer(model, layer)  # fail early on a wrong path

    def objective(images: Tensor) -> Tensor:
        pooled = _spatial_mean(module_output(model, layer, images))
        idx = _per_image_index(channels, pooled.shape[0], "channels").to(pooled.device)
        if int(idx.max()) >= pooled.shape[1] or int(idx.min()) < 0:
            raise IndexError(f"channel {idx.tolist()} out of range: {layer!r} has {pooled.shape[1]} channels")
        return pooled.gather(1, idx[:, None])[:, 0]

    return objective


def direction_objective(model: nn.Module, layer: str, directions: Tensor) -> Objective:
    """Score image i by the mean over space of ``<v_i, a(:, :, h, w)>`` at ``layer``.

    ``directions`` is (C,) (one direction for every image) or (N, C) (one per image).
    """
    get_layer(model, layer)
    v = torch.as_tensor(directions, dtype=torch.float32)
    if v.dim() not in (1, 2):
        raise ValueError(f"directions must be (C,) or (N, C), got shape {tuple(v.shape)}")

    def objective(images: Tensor) -> Tensor:
        pooled = _spatial_mean(module_output(model, layer, images))  # mean is linear
        d = v.to(pooled.device, pooled.dtype)
        if d.shape[-1] != pooled.shape[1]:
            raise ValueError(f"direction has {d.shape[-1]} entries, {layer!r} has {pooled.shape[1]} channels")
        if d.dim() == 2 and d.shape[0] != pooled.shape[0]:
            raise ValueError(f"got {d.shape[0]} directions for a batch of {pooled.shape[0]} images")
        return (pooled * d).sum(dim=1)

    return objective


def split_objective(split: object, neurons: int | Sequence[int] | None = None) -> Objective:
    """Score image i by the mean spatial activation of virtual neuron ``neurons[i]`` of
    ``split`` (default: all k neurons, so render with ``num = split.k``)."""
    k = getattr(split, "k", None)
    if k is None or not hasattr(split, "activations"):
        raise TypeError(f"expected a benchmark.core.types.Split, got {type(split).__name__}")
    chosen = list(range(k)) if neurons is None else neurons

    def objective(images: Tensor) -> Tensor:
        acts = split.activations(images)  # (N, k, H, W)
        pooled = _spatial_mean(acts)
        idx = _per_image_index(chosen, pooled.shape[0], "neurons").to(pooled.device)
        if int(idx.max()) >= k or int(idx.min()) < 0:
            raise IndexError(f"virtual neuron {idx.tolist()} out of range: the split has k={k}")
        return pooled.gather(1, idx[:, None])[:, 0]

    return objective
