"""Attribution backends of :mod:`benchmark.engine.attribution`: how the gradients of several neurons
at a lower layer are computed once a span (lower layer -> studied layer) is set up.

A backend is ``(span, x, seeds, channels, **options) -> (G, N, C_lower)`` unnormalised
attribution vectors (:data:`BACKENDS`, extended with :func:`register_backend`):

* ``gradient`` -- Gradient x Input summed over space (PURE's reference), one forward shared
  by all neurons and a vmapped backward (replicated forwards where vmap cannot batch);
* ``integrated_gradients`` -- zero baseline, midpoint Riemann sum over ``steps``;
* ``lrp`` -- zennit's EpsilonPlusFlat composite (:func:`default_composite`), relevance at the
  lower layer.

``span`` is :class:`benchmark.engine.attribution._Span`: calling it runs the model with the lower
layer's output replaced, up to the studied layer. Kept apart from the span machinery and the
public API (:mod:`benchmark.engine.attribution`) so that a new backend is one function here.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from benchmark.engine.attribution import _Span

ELEMENT_BUDGET = 2**25  # elements of one replicated activation tensor; bounds the auto chunk


def _replicated_grads(span: "_Span", x_points: Tensor, seeds_gnhw: Tensor, channels: Sequence[int]) -> Tensor:
    """(G, S, N, C_lower, h, w) gradients of ``sum_hw seeds[g] * a_{c_g}`` at the S points
    ``x_points`` (S, N, C_lower, h, w), all in ONE forward and ONE backward.

    The points are replicated G times along the batch (layout g, s, n); replica g's cotangent
    is nonzero only at channel ``c_g``. With G = S = 1 this is the ordinary backward.
    """
    G, (S, N) = len(channels), x_points.shape[:2]
    x_in = x_points.detach().reshape(S * N, *x_points.shape[2:]).repeat(G, *([1] * (x_points.dim() - 2)))
    x_in.requires_grad_(True)
    z = span(x_in)
    cotangent = torch.zeros_like(z).view(G, S, N, *z.shape[1:])
    for g, c in enumerate(channels):
        cotangent[g, :, :, c] = seeds_gnhw[g].to(z.dtype)
    (grad,) = torch.autograd.grad(z, x_in, cotangent.view_as(z))
    return grad.view(G, S, N, *x_points.shape[2:])


# ---- backends: (span, x, seeds, channels, **options) -> (G, N, C_lower), unnormalised --------
Backend = Callable[..., Tensor]
BACKENDS: dict[str, Backend] = {}


def register_backend(name: str) -> Callable[[Backend], Backend]:
    def add(fn: Backend) -> Backend:
        BACKENDS[name] = fn
        return fn
    return add


def _vmapped_grads(span: "_Span", x: Tensor, seeds_gnhw: Tensor, channels: Sequence[int]) -> Tensor:
    """(G, N, C_lower, h, w) gradients of ``sum_hw seeds[g] * a_{c_g}`` at ``x``: ONE forward
    shared by all neurons and one vmapped backward over the G cotangents
    (``is_grads_batched``); no replication of the forward."""
    if x.shape[0] > 1 and not span.cut_checked:
        # a batch that differs from the images' exposes a skip path around the lower layer
        # (the replicated path gets this check for free); one cheap forward, once per span
        span(x[:1].detach().clone().requires_grad_(True))
        span.cut_checked = True
    x_in = x.detach().clone().requires_grad_(True)
    z = span(x_in)
    cotangent = torch.zeros((len(channels),) + tuple(z.shape), dtype=z.dtype, device=z.device)
    for g, c in enumerate(channels):
        cotangent[g, :, c] = seeds_gnhw[g].to(z.dtype)
    (grad,) = torch.autograd.grad(z, x_in, cotangent, is_grads_batched=True)
    return grad


@register_backend("gradient")
def gradient_backend(span: "_Span", x: Tensor, seeds: Tensor, channels: Sequence[int]) -> Tensor:
    """Gradient x Input at the lower layer, summed over space (the PURE reference).

    Uses the shared-forward vmapped backward; spans with an operation vmap cannot batch
    fall back to replicating the forward (same numbers)."""
    try:
        grads = _vmapped_grads(span, x, seeds, channels)
    except (RuntimeError, NotImplementedError):
        grads = _replicated_grads(span, x[None], seeds, channels)[:, 0]
    return (grads * x).sum((-2, -1))


@register_backend("integrated_gradients")
def integrated_gradients_backend(span: "_Span", x: Tensor, seeds: Tensor, channels: Sequence[int],
                                 steps: int = 32) -> Tensor:
    """Integrated gradients from a zero baseline at the lower layer (midpoint Riemann sum)."""
    if steps < 1:
        raise ValueError(f"integrated gradients needs steps >= 1, got {steps}")
    alphas = (torch.arange(steps, dtype=x.dtype, device=x.device) + 0.5) / steps
    group = max(1, ELEMENT_BUDGET // (len(channels) * x.numel()))  # steps per forward
    total = torch.zeros(len(channels), *x.shape, dtype=x.dtype, device=x.device)
    for i in range(0, steps, group):
        points = alphas[i:i + group].view(-1, *([1] * x.dim())) * x
        total += _replicated_grads(span, points, seeds, channels).sum(1)
    return (total / steps * x).sum((-2, -1))


def default_composite(model: nn.Module):
    """zennit EpsilonPlusFlat with the ResNet canonizer for torchvision ResNets, else
    SequentialMergeBatchNorm."""
    import torchvision
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonPlusFlat
    from zennit.torchvision import ResNetCanonizer

    canonizer = ResNetCanonizer() if isinstance(model, torchvision.models.ResNet) else SequentialMergeBatchNorm()
    return EpsilonPlusFlat(canonizers=[canonizer])


@register_backend("lrp")
def lrp_backend(span: "_Span", x: Tensor, seeds: Tensor, channels: Sequence[int], composite=None) -> Tensor:
    """LRP relevance at the lower layer under a zennit composite (reverted on exit)."""
    composite = composite if composite is not None else default_composite(span.model)
    with composite.context(span.model):
        return _replicated_grads(span, x[None], seeds, channels)[:, 0].sum((-2, -1))
