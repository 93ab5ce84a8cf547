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

Forwards and backwards (gradient backend): ONE forward per batch in which the lower-layer
activations become a leaf (no separate reference forward: the seeds are read from the same
output), then a plain backward for a single neuron (PURE's per-neuron loop, the lean
baseline :func:`neuron_attributions_loop`) or backwards batched over neuron chunks
(``is_grads_batched``) for several neurons of the same images.
:func:`reference_attributions` shares one forward per batch of the UNION of several
neurons' own images (PURE's references of every channel of a layer) and seeds each neuron
only on its own images. Other backends (zennit hooks, integrated gradients) replicate the
lower-layer activations G times along the batch so that ONE backward carries G
neuron-specific cotangents (replica g seeds only channel c_g); this works with any hooks but
repeats the span's forward G times. The span runs through the full model with reversible
hooks: ``lower_layer``'s output (or, for ``lower_layer=None``, ``layer``'s input) is
replaced and the forward stops at ``layer``. The lower layer must *cut* the network: paths
from the image to ``layer`` that bypass it are treated as constants (and usually fail with
a batch-size error, which is reported clearly).
"""
from __future__ import annotations

import weakref
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from benchmark.engine.attribution_backends import BACKENDS, ELEMENT_BUDGET, default_composite, register_backend
from benchmark.engine.layers import check_channel, eval_mode, frozen_parameters, get_layer

__all__ = ["BACKENDS", "ELEMENT_BUDGET", "auto_chunk", "default_composite", "neuron_attributions",
           "neuron_attributions_loop", "reference_attributions", "register_backend"]

EPS_NORM = 1e-10


class _Stop(Exception):
    pass


_LEAF = torch.empty(0)  # sentinel: make the lower-layer activations a leaf in the same forward


class _Span:
    """Runs ``model`` on ``images`` with ``x`` (lower-layer output) replaced, up to ``layer``."""

    cut_checked: bool = False  # set by a backend once the cut check has passed for this span

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

    def leaf_forward(self) -> tuple[Tensor, Tensor]:
        """ONE forward of the images: ``x`` becomes a leaf requiring grad where it is computed
        and ``z`` (the layer output) is differentiable w.r.t. it."""
        return self._run(_LEAF)

    def _run(self, x_in: Tensor | None) -> tuple[Tensor, Tensor]:
        box: dict[str, Tensor] = {}
        where = f"output of {self.lower_name!r}" if self.lower is not None else f"input of {self.layer_name!r}"

        def enter(x: Tensor) -> Tensor | None:
            if "x" in box:
                raise ValueError(f"the {where} is computed more than once per forward pass (a shared "
                                 "module such as a block's ReLU); choose a module called once, e.g. a block")
            box["x"] = x.detach().clone()  # clone: later in-place ops must not change it
            if x_in is _LEAF:
                box["x"].requires_grad_(True)
                return box["x"].clone()  # not the leaf itself: later in-place ops are allowed
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
            if isinstance(x_in, Tensor) and x_in is not _LEAF and x_in.shape[0] != self.images.shape[0]:
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
        expected = box["x"].shape[0] if x_in is _LEAF else (None if x_in is None else x_in.shape[0])
        if x_in is not None and (z.shape[0] != expected or not z.requires_grad):
            raise ValueError(f"the output of {self.layer_name!r} does not depend on the {where} "
                             "batch-wise; choose a lower_layer that cuts the network before the layer")
        return box["x"], z


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


_CUT_CHECKED: "weakref.WeakKeyDictionary[nn.Module, set]" = weakref.WeakKeyDictionary()


def _check_cut(model: nn.Module, layer: str, lower_layer: str | None, images: Tensor, x: Tensor) -> None:
    """Refuse a ``lower_layer`` that does not cut the network before ``layer`` (a skip path
    around it would silently count as constant): a forward of two images with ONE replaced
    row fails on the batch size then. Once per (model, layer, lower_layer); a layer's own
    input (``lower_layer=None``) always cuts."""
    if lower_layer is None or (layer, lower_layer) in _CUT_CHECKED.get(model, set()):
        return
    two = images[[0, min(1, images.shape[0] - 1)]]
    _Span(model, layer, lower_layer, two)(x[:1].detach().clone().requires_grad_(True))
    _CUT_CHECKED.setdefault(model, set()).add((layer, lower_layer))


def _shared_gradient(span: _Span, x: Tensor, z: Tensor, cotangents: Callable[[list[int]], Tensor],
                     channels: list[int], chunk: int | None) -> Tensor:
    """(G, N, C_lower) Gradient x Input, summed over space, for every channel from ONE forward
    (``x`` leaf, ``z`` its layer output): a plain backward for a single neuron, backwards
    batched over neuron chunks (``is_grads_batched``) for several; ``cotangents(chunk)``
    gives the (G, *z.shape) seeds."""
    if len(channels) == 1:
        (grad,) = torch.autograd.grad(z, x, cotangents(channels)[0])
        return (grad * x.detach()).sum((-2, -1))[None]
    chunk = chunk or auto_chunk(x, z, len(channels))
    parts = []
    for start in range(0, len(channels), chunk):
        chans = channels[start:start + chunk]
        last = start + chunk >= len(channels)
        try:
            (grad,) = torch.autograd.grad(z, x, cotangents(chans), is_grads_batched=True, retain_graph=not last)
        except (RuntimeError, NotImplementedError):  # an op vmap cannot batch: one backward per neuron
            grad = torch.stack([torch.autograd.grad(z, x, cot, retain_graph=True)[0] for cot in cotangents(chans)])
        parts.append((grad * x.detach()).sum((-2, -1)))
    return torch.cat(parts)


def _leaf_pass(model, layer, lower_layer, images, channels):
    """One forward with the lower layer's output as the leaf: (span, leaf x, layer output z,
    seeds = z's positive part), after checking the channels and that the cut is complete."""
    span = _Span(model, layer, lower_layer, images)
    x, z = span.leaf_forward()
    for c in channels:
        check_channel(c, z.shape[1], layer)
    _check_cut(model, layer, lower_layer, images, x)
    return span, x, z, z.detach().clamp(min=0)


def _gradient_attributions(model, layer, lower_layer, images, channels, chunk) -> Tensor:
    """The ``gradient`` backend without extra forwards: one forward, seeds read from it."""
    if images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty (N, C, H, W) batch, got shape {tuple(images.shape)}")
    span, x, z, seeds = _leaf_pass(model, layer, lower_layer, images, channels)

    def cotangents(chans: list[int]) -> Tensor:
        cot = torch.zeros((len(chans),) + tuple(z.shape), dtype=z.dtype, device=z.device)
        for g, c in enumerate(chans):
            cot[g, :, c] = seeds[:, c]
        return cot

    return _shared_gradient(span, x, z, cotangents, channels, chunk)


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

    The ``gradient`` backend runs ONE forward (the lower-layer activations made a leaf in
    it, the seeds read from its output) and a plain backward for one neuron, backwards
    batched over neurons for several. Other backends: :func:`_prepare` and the backend.

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
    if backend not in BACKENDS:
        raise ValueError(f"unknown attribution backend {backend!r}; available: {', '.join(sorted(BACKENDS))}")
    channels = [int(c) for c in (channels.tolist() if isinstance(channels, Tensor) else channels)]
    if not channels:
        raise ValueError("channels is empty: give at least one output channel of the layer")
    with eval_mode(model), frozen_parameters(model), torch.enable_grad():
        if backend == "gradient" and not backend_options:
            return _finish(_gradient_attributions(model, layer, lower_layer, images, channels, chunk), normalize)
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
    """Same result as :func:`neuron_attributions`, one neuron at a time: the lean per-neuron
    baseline (``gradient``: one forward and one plain backward per neuron, as the authors'
    per-neuron loop)."""
    channels = [int(c) for c in (channels.tolist() if isinstance(channels, Tensor) else channels)]
    return torch.cat([neuron_attributions(model, layer, lower_layer, images, [c], backend, normalize,
                                          **backend_options) for c in channels])


def reference_attributions(model: nn.Module, layer: str, lower_layer: str | None, dataset, ids_by_channel,
                           batch_size: int, device, normalize: bool = True) -> dict[int, Tensor]:
    """``{channel: (len(ids), C_lower)}`` gradient attributions of each channel's own images
    ``ids_by_channel[channel]`` (dataset indices, e.g. PURE's references): ONE forward per
    batch of the UNION of the images, shared by every channel with an image in the batch,
    and one backward batched over those channels (seeds only on each channel's own images).
    Same vectors as :func:`neuron_attributions` per channel."""
    wanted = {int(c): [int(i) for i in ids] for c, ids in ids_by_channel.items()}
    union = sorted({i for ids in wanted.values() for i in ids})
    rows: dict[int, dict[int, Tensor]] = {c: {} for c in wanted}
    with eval_mode(model), frozen_parameters(model), torch.enable_grad():
        for start in range(0, len(union), batch_size):
            batch = union[start:start + batch_size]
            where = {i: n for n, i in enumerate(batch)}
            users = [c for c, ids in wanted.items() if any(i in where for i in ids)]
            images = dataset.images(batch).to(device)
            span, x, z, seeds = _leaf_pass(model, layer, lower_layer, images, users)
            masks = {c: torch.tensor([i in set(wanted[c]) for i in batch], device=z.device) for c in users}

            def cotangents(chans: list[int]) -> Tensor:
                cot = torch.zeros((len(chans),) + tuple(z.shape), dtype=z.dtype, device=z.device)
                for g, c in enumerate(chans):
                    cot[g, :, c] = seeds[:, c] * masks[c].view(-1, 1, 1).to(z.dtype)
                return cot

            r = _finish(_shared_gradient(span, x, z, cotangents, users, None), normalize)
            for g, c in enumerate(users):
                for i in wanted[c]:
                    if i in where:
                        rows[c][i] = r[g, where[i]]
    return {c: torch.stack([rows[c][i] for i in ids]) for c, ids in wanted.items()}
