"""Receptive-field crops of reference samples, as PURE evaluates them (Dreyer et al.,
CVPR-W 2024, arXiv 2404.06453; their ``crop_and_mask_images`` with ``rf=True``).

For neuron ``a(x)`` (N, H', W') and image x:

1. heatmap ``R = sum_colour |x * d(sum_hw max(a, 0)) / dx|`` (Gradient x Input of the
   neuron's spatially summed positive activation; PURE uses a CRP/LRP heatmap instead);
2. blur R with a Gaussian (``kernel_size`` 5 as PURE), normalise by its max;
3. crop the bounding box of ``R > threshold`` (2% as PURE), made square by growing the
   shorter side around its centre and shifting it inside the image;
4. resize the crop to ``out_size`` x ``out_size``.

An image whose heatmap is zero everywhere (the neuron is silent) is returned whole.
Images are cropped in the space they are given in; :func:`denormalize` maps
mean/std-normalised images back to [0, 1] first if the embedder needs that.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.transforms.functional import gaussian_blur

from benchmark.fvis._common import IMAGENET_MEAN, IMAGENET_STD
from benchmark.fvis._objectives import module_output
from benchmark.layers import eval_mode

NeuronFn = Callable[[Tensor], Tensor]


def normalize(images: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """[0, 1] images -> (x - mean) / std per colour channel."""
    m = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - m) / s


def denormalize(images: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """Inverse of :func:`normalize`, clamped to [0, 1]."""
    m = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images * s + m).clamp(0, 1)


def _neuron_fn(model: nn.Module | None, layer: str | None, channel_or_fn: int | NeuronFn) -> NeuronFn:
    if callable(channel_or_fn):
        return channel_or_fn
    if isinstance(channel_or_fn, bool) or not isinstance(channel_or_fn, int):
        raise TypeError(f"channel_or_fn must be an int channel or a callable images -> (N, H, W), "
                        f"got {type(channel_or_fn).__name__}")
    if model is None or layer is None:
        raise ValueError("a channel index needs the model and the layer path")
    channel = channel_or_fn

    def fn(images: Tensor) -> Tensor:
        acts = module_output(model, layer, images)
        if acts.dim() != 4:
            raise ValueError(f"layer {layer!r} output has shape {tuple(acts.shape)}, expected (N, C, H, W)")
        if not 0 <= channel < acts.shape[1]:
            raise IndexError(f"channel {channel} out of range: {layer!r} has {acts.shape[1]} channels")
        return acts[:, channel]

    return fn


def neuron_heatmaps(model: nn.Module | None, layer: str | None, channel_or_fn: int | NeuronFn,
                    images_nchw: Tensor, batch_size: int = 64) -> Tensor:
    """(N, H, W) Gradient x Input of ``sum_hw max(a, 0)``, absolute, summed over colour."""
    fn = _neuron_fn(model, layer, channel_or_fn)
    out = []
    for start in range(0, images_nchw.shape[0], batch_size):
        x = images_nchw[start:start + batch_size].detach().clone().requires_grad_(True)
        if model is not None:
            with eval_mode(model):
                acts = fn(x)
        else:
            acts = fn(x)
        if acts.dim() != 3 or acts.shape[0] != x.shape[0]:
            raise ValueError(f"the neuron must give (N, H, W) activations, got {tuple(acts.shape)}")
        total = acts.clamp(min=0).sum()  # images are independent in eval mode
        (grad,) = torch.autograd.grad(total, x, allow_unused=True)
        grad = torch.zeros_like(x) if grad is None else grad
        out.append((grad * x).abs().sum(dim=1).detach())
    return torch.cat(out)


def crop_boxes(heatmaps_nhw: Tensor, threshold: float = 0.02, kernel_size: int = 5,
               sigma: float | None = None, square: bool = True) -> Tensor:
    """(N, 4) long boxes ``(top, bottom, left, right)``, end-exclusive, where the blurred
    heatmap exceeds ``threshold`` times its max (whole image if it is zero)."""
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size}")
    n, h, w = heatmaps_nhw.shape
    heat = heatmaps_nhw.detach().float()[:, None]
    if kernel_size > 1:
        heat = gaussian_blur(heat, [kernel_size, kernel_size], None if sigma is None else [sigma, sigma])
    heat = heat[:, 0].abs()
    peak = heat.flatten(1).amax(dim=1)
    boxes = torch.tensor([[0, h, 0, w]] * n, dtype=torch.long)
    for i in range(n):
        if peak[i] <= 0:
            continue
        rows, cols = torch.nonzero(heat[i] > threshold * peak[i], as_tuple=True)
        top, bottom = int(rows.min()), int(rows.max()) + 1
        left, right = int(cols.min()), int(cols.max()) + 1
        if square:
            side = max(bottom - top, right - left)
            top, bottom = _grow(top, bottom, side, h)
            left, right = _grow(left, right, side, w)
        boxes[i] = torch.tensor([top, bottom, left, right])
    return boxes


def _grow(lo: int, hi: int, side: int, limit: int) -> tuple[int, int]:
    """Grow [lo, hi) symmetrically to ``side`` (at most ``limit``), shifted inside [0, limit)."""
    side = min(side, limit)
    lo -= (side - (hi - lo)) // 2
    lo = min(max(lo, 0), limit - side)
    return lo, lo + side


def crop_and_resize(images_nchw: Tensor, boxes: Tensor, out_size: int) -> Tensor:
    """(N, C, S, S): each image's box resized (bilinear, antialiased) to ``out_size``."""
    crops = []
    for img, (top, bottom, left, right) in zip(images_nchw, boxes.tolist()):
        patch = img[None, :, top:bottom, left:right].float()
        crops.append(F.interpolate(patch, size=(out_size, out_size), mode="bilinear",
                                   align_corners=False, antialias=True))
    return torch.cat(crops).to(images_nchw.dtype) if crops else images_nchw.new_zeros(0, images_nchw.shape[1], out_size, out_size)


def receptive_field_crops(model: nn.Module | None, layer: str | None, channel_or_fn: int | NeuronFn,
                          images_nchw: Tensor, out_size: int = 64, threshold: float = 0.02,
                          kernel_size: int = 5, sigma: float | None = None, square: bool = True,
                          batch_size: int = 64) -> Tensor:
    """(N, 3, out_size, out_size) crops of each image to the region driving the neuron.

    ``channel_or_fn`` is a channel of module ``layer`` of ``model``, or a callable
    ``images -> (N, H, W)`` (a virtual neuron, e.g. ``lambda x: split.activations(x)[:, i]``;
    ``model``/``layer`` may then be None).  See the module docstring for the recipe.
    """
    if images_nchw.dim() != 4:
        raise ValueError(f"expected (N, C, H, W) images, got {tuple(images_nchw.shape)}")
    if out_size < 1:
        raise ValueError(f"out_size must be positive, got {out_size}")
    heat = neuron_heatmaps(model, layer, channel_or_fn, images_nchw, batch_size=batch_size)
    boxes = crop_boxes(heat, threshold=threshold, kernel_size=kernel_size, sigma=sigma, square=square)
    return crop_and_resize(images_nchw.detach(), boxes, out_size)
