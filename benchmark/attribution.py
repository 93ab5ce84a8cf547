"""Per-neuron attribution vectors at a lower layer, batched over neurons (PURE's features).

For neuron c of ``layer`` (output map ``a_c``) and image n, PURE (Dreyer et al., CVPR-W 2024,
arXiv 2404.06453, Sec. 3; the authors' CRP code) starts the backward pass at ``a_c`` with the
neuron's positive activation as initial relevance and reads Gradient x Input at the lower
layer's output ``x``, summed over space::

    r_j = sum_hw x_j(h,w) * d( sum_hw s(h,w) * a_c(h,w) ) / d x_j(h,w),   s = max(a_c, 0) (detached)

then L1-normalises ``r <- r / (sum_j |r_j| + 1e-10)``. Backends (:data:`BACKENDS`):

* ``gradient`` -- the formula above (the reference);
* ``lrp`` -- zennit's EpsilonPlusFlat composite (ResNet canonizer for torchvision ResNets,
  else SequentialMergeBatchNorm) with the same initial relevance; ``r_j`` is the LRP relevance
  arriving at ``x_j`` summed over space (zennit's modified gradient already *is* relevance);
* ``integrated_gradients`` -- ``x_j * mean_k dF/dx_j(alpha_k x)`` summed over space, with
  ``F = sum_hw s * a_c`` (same ``s``), a zero baseline at the lower layer and ``steps``
  midpoint Riemann nodes ``alpha_k = (k - 1/2) / steps``; completeness: sum_j r_j ~ F(x) - F(0).

Batching (gradient backend): ONE forward of the span shared by all neurons and one vmapped
backward over neuron-specific cotangents (``is_grads_batched``). Other backends (and spans vmap
cannot batch): for a chunk of G neurons the lower-layer activations are replicated G times along
the batch, one forward runs the span ``x -> a`` on the (G*N) batch and ONE backward carries
neuron-specific cotangents (replica g seeds only channel c_g); this works with any hooks
(zennit's backward hooks included) but repeats the span's forward G times. Measured on 2 CPU
cores against one backward per neuron: 4.3x (ResNet-18 layer4 from layer3, 32 neurons x 64
images) and 5x (world CNN blocks.2.conv2, 64 neurons x 100 references). The span runs through the full model with reversible
hooks: ``lower_layer``'s output (or, for ``lower_layer=None``, ``layer``'s input) is
replaced and the forward stops at ``layer``. The lower layer must *cut* the network: paths
from the image to ``layer`` that bypass it are treated as constants (and usually fail with
a batch-size error, which is reported clearly).
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from benchmark.layers import check_channel, eval_mode, get_layer

EPS_NORM = 1e-10
ELEMENT_BUDGET = 2**25  # elements of one replicated activation tensor; bounds the auto chunk


class _Stop(Exception):
    pass


class _Span:
    """Runs ``model`` on ``images`` with ``x`` (lower-layer output) replaced, up to ``layer``."""

    def __init__(self, model: nn.Module, layer: str, lower_layer: str | None, images: Tensor):
        self.model, self.images = model, images.detach()
        self.layer_name, self.lower_name = layer, lower_layer
        self.layer = get_layer(model, layer)
        self.lower = get_layer(model, lower_layer) if lower_layer is not None else None

    def reference(self) -> tuple[Tensor, Tensor]:
        """``x`` (N, C_lower, h, w) and the layer output ``z`` (N, C, H, W) of a plain forward."""
        with torch.no_grad():
            return self._run(None)

    def __call__(self, x_in: Tensor) -> Tensor:
        """The layer output for lower-layer activations ``x_in`` (batch R*N), differentiable."""
        return self._run(x_in)[1]

    def _run(self, x_in: Tensor | None) -> tuple[Tensor, Tensor]:
        box: dict[str, Tensor] = {}
        where = f"output of {self.lower_name!r}" if self.lower is not None else f"input of {self.layer_name!r}"

        def enter(x: Tensor) -> Tensor | None:
            if "x" in box:
                raise ValueError(f"the {where} is computed more than once per forward pass (a shared "
                                 "module such as a block's ReLU); choose a module called once, e.g. a block")
            box["x"] = x.detach().clone()  # clone: later in-place ops must not change it
            return None if x_in is None else x_in.clone()

        def out_hook(_m, _args, out):
            return enter(out)

        def pre_hook(_m, args):
            new = enter(args[0])
            return None if new is None else (new, *args[1:])

        def stop(_m, _args, out):
            if "x" not in box:
                raise ValueError(f"{self.lower_name!r} is not computed before {self.layer_name!r}; "
                                 "lower_layer must come earlier in the forward pass")
            box["z"] = out
            raise _Stop

        handles = [self.lower.register_forward_hook(out_hook, prepend=True) if self.lower is not None
                   else self.layer.register_forward_pre_hook(pre_hook, prepend=True),
                   self.layer.register_forward_hook(stop)]  # appended: after any zennit hook
        try:
            self.model(self.images)
        except _Stop:
            pass
        except RuntimeError as err:
            if x_in is not None and x_in.shape[0] != self.images.shape[0]:
                raise ValueError(f"the span from the {where} to {self.layer_name!r} also depends on earlier "
                                 f"activations (a skip connection across it); choose a lower_layer that cuts "
                                 f"the network ({err})") from err
            raise
        finally:
            for h in handles:
                h.remove()
        if "z" not in box:
            raise RuntimeError(f"layer {self.layer_name!r} was not called during the forward pass")
        z = box["z"]
        if x_in is not None and (z.shape[0] != x_in.shape[0] or not z.requires_grad):
            raise ValueError(f"the output of {self.layer_name!r} does not depend on the {where} "
                             "batch-wise; choose a lower_layer that cuts the network before the layer")
        return box["x"], z


def _replicated_grads(span: _Span, x_points: Tensor, seeds_gnhw: Tensor, channels: Sequence[int]) -> Tensor:
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


def _vmapped_grads(span: _Span, x: Tensor, seeds_gnhw: Tensor, channels: Sequence[int]) -> Tensor:
    """(G, N, C_lower, h, w) gradients of ``sum_hw seeds[g] * a_{c_g}`` at ``x``: ONE forward
    shared by all neurons and one vmapped backward over the G cotangents
    (``is_grads_batched``); no replication of the forward."""
    if x.shape[0] > 1 and not getattr(span, "cut_checked", False):
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
def gradient_backend(span: _Span, x: Tensor, seeds: Tensor, channels: Sequence[int]) -> Tensor:
    """Gradient x Input at the lower layer, summed over space (the PURE reference).

    Uses the shared-forward vmapped backward; spans with an operation vmap cannot batch
    fall back to replicating the forward (same numbers)."""
    try:
        grads = _vmapped_grads(span, x, seeds, channels)
    except (RuntimeError, NotImplementedError):
        grads = _replicated_grads(span, x[None], seeds, channels)[:, 0]
    return (grads * x).sum((-2, -1))


@register_backend("integrated_gradients")
def integrated_gradients_backend(span: _Span, x: Tensor, seeds: Tensor, channels: Sequence[int],
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
def lrp_backend(span: _Span, x: Tensor, seeds: Tensor, channels: Sequence[int], composite=None) -> Tensor:
    """LRP relevance at the lower layer under a zennit composite (reverted on exit)."""
    composite = composite if composite is not None else default_composite(span.model)
    with composite.context(span.model):
        return _replicated_grads(span, x[None], seeds, channels)[:, 0].sum((-2, -1))


# ---- public API --------------------------------------------------------------------------
def _prepare(model, layer, lower_layer, images, channels, backend) -> tuple[_Span, Tensor, Tensor, list[int]]:
    if backend not in BACKENDS:
        raise ValueError(f"unknown attribution backend {backend!r}; available: {', '.join(sorted(BACKENDS))}")
    if images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty (N, C, H, W) batch, got shape {tuple(images.shape)}")
    channels = [int(c) for c in (channels.tolist() if isinstance(channels, Tensor) else channels)]
    if not channels:
        raise ValueError("channels is empty: give at least one output channel of the layer")
    span = _Span(model, layer, lower_layer, images)
    x, z = span.reference()
    for c in channels:
        check_channel(c, z.shape[1], layer)
    return span, x, z, channels


def _finish(r: Tensor, normalize: bool) -> Tensor:
    r = r.detach()
    return r / (r.abs().sum(-1, keepdim=True) + EPS_NORM) if normalize else r


def auto_chunk(x: Tensor, z: Tensor, num_channels: int) -> int:
    """Neurons per backward so that one replicated activation stays under ELEMENT_BUDGET."""
    per_replica = x.shape[0] * max(x[0].numel(), z[0].numel())
    return max(1, min(num_channels, ELEMENT_BUDGET // max(per_replica, 1)))


def neuron_attributions(
    model: nn.Module,
    layer: str,
    lower_layer: str | None,
    images: Tensor,
    channels: Sequence[int] | Tensor,
    backend: str = "gradient",
    normalize: bool = True,
    chunk: int | None = None,
    **backend_options,
) -> Tensor:
    """(len(channels), N, C_lower) attribution vectors, several neurons per backward pass.

    Args:
        model: the network (put in eval mode for the call, then restored; never modified).
        layer: module path of the layer under study (``a`` = its output).
        lower_layer: module path whose OUTPUT is ``x``; None = the input of ``layer``.
        images: (N, C, H, W) on the model's device.
        channels: output channels of ``layer``.
        backend: a key of :data:`BACKENDS`.
        normalize: L1-normalise each vector (PURE).
        chunk: neurons per backward; None = as many as fit :data:`ELEMENT_BUDGET`.
        backend_options: e.g. ``steps`` (integrated gradients), ``composite`` (lrp).
    """
    if chunk is not None and chunk < 1:
        raise ValueError(f"chunk must be >= 1 or None, got {chunk}")
    with eval_mode(model), torch.enable_grad():
        span, x, z, channels = _prepare(model, layer, lower_layer, images, channels, backend)
        chunk = chunk or auto_chunk(x, z, len(channels))
        seeds = z[:, channels].clamp(min=0).transpose(0, 1)  # (G, N, H, W) initial relevance
        parts = [BACKENDS[backend](span, x, seeds[i:i + chunk], channels[i:i + chunk], **backend_options)
                 for i in range(0, len(channels), chunk)]
    return _finish(torch.cat(parts), normalize)


def neuron_attributions_loop(
    model: nn.Module,
    layer: str,
    lower_layer: str | None,
    images: Tensor,
    channels: Sequence[int] | Tensor,
    backend: str = "gradient",
    normalize: bool = True,
    **backend_options,
) -> Tensor:
    """Same result as :func:`neuron_attributions`, one neuron per backward (slow reference)."""
    with eval_mode(model), torch.enable_grad():
        span, x, z, channels = _prepare(model, layer, lower_layer, images, channels, backend)
        parts = [BACKENDS[backend](span, x, z[:, c].clamp(min=0)[None], [c], **backend_options)
                 for c in channels]
    return _finish(torch.cat(parts), normalize)


def time_batched_vs_loop(model: nn.Module, layer: str, lower_layer: str | None, images: Tensor,
                         channels: Sequence[int], backend: str = "gradient", repeats: int = 3) -> dict:
    """Best-of-``repeats`` wall times of the batched and the neuron-by-neuron computation."""
    times = {"batched": float("inf"), "loop": float("inf")}
    results = {}
    for _ in range(repeats):  # interleaved, so that machine load affects both alike
        for name, fn in (("batched", neuron_attributions), ("loop", neuron_attributions_loop)):
            start = time.perf_counter()
            results[name] = fn(model, layer, lower_layer, images, channels, backend)
            times[name] = min(times[name], time.perf_counter() - start)
    diff = (results["batched"] - results["loop"]).abs().max().item()
    return {"batched_s": times["batched"], "loop_s": times["loop"],
            "speedup": times["loop"] / times["batched"], "max_abs_diff": diff,
            "neurons": len(channels), "images": int(images.shape[0]), "backend": backend}


if __name__ == "__main__":  # python -m benchmark.attribution: the speed-up on a small CNN
    import argparse

    import torchvision

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", type=int, default=32)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--backend", default="gradient", choices=sorted(BACKENDS))
    args = parser.parse_args()
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None).eval()  # random weights, nothing downloaded
    batch = torch.randn(args.images, 3, args.size, args.size)
    print(time_batched_vs_loop(net, "layer4", "layer3", batch, list(range(args.neurons)), args.backend))
