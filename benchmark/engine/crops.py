"""Receptive-field crops of reference samples exactly as PURE computes them (Dreyer, Purelku,
Vielhaben, Samek, Lapuschkin, CVPR-W 2024, arXiv 2404.06453; ``compute_embeddings.py`` calls
zennit-crp's ``FeatureVisualization.get_max_reference(..., composite=EpsilonPlusFlat(ResNet
canonizer), rf=True)`` with ``utils/render.py::crop_and_mask_images`` of github.com/maxdreyer/PURE).

For channel c of module ``layer`` and one image x:

1. **seed** (zennit-crp ``rf=True``, ``ChannelConcept.mask_rf``): the initial relevance at the
   layer output is the channel's activation at its SINGLE maximally activating position
   (first in row-major order on ties), zero everywhere else;
2. **LRP** to the input under a zennit composite (:func:`lrp_composite`: ``EpsilonPlusFlat``
   with zennit's ``ResNetCanonizer`` for torchvision ResNets, as PURE -- whose
   ``utils/lrp_composites.py`` copies zennit's composite: ZPlus for convolutions, Epsilon for
   linear layers, Flat for the first layer; with ``SequentialMergeBatchNorm`` for any other
   model, whose residual adds then pass relevance like gradients), on a copy of the model;
3. **heatmap** = relevance summed over colour channels, SIGNED (zennit-crp's ``heatmap``);
4. **box** (:func:`pure_box`): Gaussian blur (kernel 5, torchvision's default sigma 1.1), then
   the absolute value divided by its max; the box spans the rows/columns where it exceeds 2%;
   then exactly PURE's code: the box ends at the last such row/column EXCLUSIVE (the last row
   and column are dropped), a box of a single pixel or an empty heatmap becomes
   ``[0, H-1) x [0, W-1)``, the shorter side is grown by ``(d // 2)`` on each side and shifted
   right/down when it leaves the image at the top/left only (never re-squared at the
   bottom/right edge; slicing clips it there), and an all-zero crop falls back to the image;
5. the crop is returned at its NATIVE size (a list of tensors); the embedder resizes it.

zennit-crp itself is not used: its ``FeatureVisualization`` needs its own on-disk maximisation
files for a whole dataset, and here the reference pool, the maximum position and the heatmap
are one small function each. The numbers are the same (tests/engine/test_crops.py checks each step).
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import Tensor, nn
from torchvision.transforms.functional import gaussian_blur

from benchmark.engine.fvis._common import IMAGENET_MEAN, IMAGENET_STD
from benchmark.engine.layers import check_channel, eval_mode, get_layer

PURE_THRESHOLD = 0.02
PURE_KERNEL = 5
PURE_VIS_THRESHOLD = 0.01


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


def lrp_composite(model: nn.Module):
    """PURE's composite: zennit ``EpsilonPlusFlat`` with the ResNet canonizer for a torchvision
    ResNet; ``SequentialMergeBatchNorm`` (batch norms folded into the preceding conv of a
    ``Sequential``) for any other model (the shared choice of :mod:`benchmark.engine.attribution`)."""
    from benchmark.engine.attribution import default_composite

    return default_composite(model)


class _Stop(Exception):
    pass


def max_position_seed(acts_nhw: Tensor) -> Tensor:
    """(N, H, W) initial relevance: each map's value at its maximum position, 0 elsewhere
    (zennit-crp's ``rf=True`` seeding; ties -> the first position in row-major order)."""
    if acts_nhw.dim() != 3:
        raise ValueError(f"expected (N, H, W) activation maps, got shape {tuple(acts_nhw.shape)}")
    flat = acts_nhw.detach().flatten(1)
    pos = flat.argmax(dim=1)
    seed = torch.zeros_like(flat)
    seed[torch.arange(flat.shape[0]), pos] = flat[torch.arange(flat.shape[0]), pos]
    return seed.view_as(acts_nhw)


def lrp_heatmaps(model: nn.Module, layer: str, channel: int, images_nchw: Tensor, composite=None,
                 batch_size: int = 64) -> Tensor:
    """(N, H, W) signed, colour-summed LRP heatmaps of ``channel`` of module ``layer`` seeded at
    its maximum position (steps 1-3 of the module docstring). The caller's model is never
    touched: the composite (canonizers and rule hooks) is applied to a deep copy."""
    if images_nchw.dim() != 4:
        raise ValueError(f"expected (N, C, H, W) images, got {tuple(images_nchw.shape)}")
    work = copy.deepcopy(model)
    composite = composite if composite is not None else lrp_composite(work)
    out = []
    with eval_mode(work), composite.context(work):
        module = get_layer(work, layer)
        box: dict[str, Tensor] = {}

        def stop(_m, _args, output):  # registered after zennit's hooks: sees the rule-wrapped output
            box["z"] = output
            raise _Stop

        handle = module.register_forward_hook(stop)
        try:
            for start in range(0, images_nchw.shape[0], batch_size):
                x = images_nchw[start:start + batch_size].detach().clone().requires_grad_(True)
                box.clear()
                with torch.enable_grad():
                    try:
                        work(x)
                    except _Stop:
                        pass
                    if "z" not in box:
                        raise RuntimeError(f"layer {layer!r} was not called during the forward pass")
                    z = box["z"]
                    if z.dim() != 4:
                        raise ValueError(f"layer {layer!r} output has shape {tuple(z.shape)}, expected (N, C, H, W)")
                    check_channel(channel, z.shape[1], layer)
                    seed = torch.zeros_like(z)
                    seed[:, channel] = max_position_seed(z[:, channel])
                    (grad,) = torch.autograd.grad(z, x, grad_outputs=seed, allow_unused=True)
                grad = torch.zeros_like(x) if grad is None else grad
                out.append(grad.detach().sum(dim=1))  # zennit: the modified gradient IS the relevance
        finally:
            handle.remove()
    return torch.cat(out) if out else images_nchw.new_zeros(0, *images_nchw.shape[-2:])


def blurred_abs(heatmap_hw: Tensor, kernel_size: int = PURE_KERNEL) -> Tensor:
    """|Gaussian blur of the signed heatmap| / its max (all zero for a zero heatmap)."""
    heat = gaussian_blur(heatmap_hw.detach().float()[None], [kernel_size, kernel_size])[0].abs()
    peak = heat.max()
    return heat / peak if peak > 0 else heat


def pure_box(heatmap_hw: Tensor, threshold: float = PURE_THRESHOLD, kernel_size: int = PURE_KERNEL) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` (end-exclusive slice bounds, possibly past the bottom/right
    edge as in PURE's code) of the crop of one signed heatmap (step 4 of the module docstring)."""
    if heatmap_hw.dim() != 2:
        raise ValueError(f"expected one (H, W) heatmap, got shape {tuple(heatmap_hw.shape)}")
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size}")
    h, w = heatmap_hw.shape
    heat = blurred_abs(heatmap_hw, kernel_size)
    full = (0, h - 1, 0, w - 1)  # zennit-crp's (0, -1, 0, -1): drops the last row and column
    if not heat.max() > 0:
        return full
    rows, cols = torch.where(heat > threshold)
    if rows.numel() == 0:
        return full
    top, bottom, left, right = int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())
    if top >= bottom and left >= right:
        return full
    dr, dc = bottom - top, right - left
    if dr > dc:
        left, right = left - (dr - dc) // 2, right + (dr - dc) // 2
        if left < 0:
            left, right = 0, right - left
    elif dc > dr:
        top, bottom = top - (dc - dr) // 2, bottom + (dc - dr) // 2
        if top < 0:
            top, bottom = 0, bottom - top
    return top, bottom, left, right


def crop_box(image_chw: Tensor, heatmap_hw: Tensor, threshold: float = PURE_THRESHOLD,
             kernel_size: int = PURE_KERNEL, vis_threshold: float = PURE_VIS_THRESHOLD) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` of the crop PURE's ``crop_and_mask_images`` keeps, clipped to
    the image (as slicing clips it): the whole image when the slice is empty, sums to zero, or
    holds no blurred heat above ``vis_threshold``."""
    h, w = image_chw.shape[-2:]
    top, bottom, left, right = pure_box(heatmap_hw, threshold, kernel_size)
    top, bottom, left, right = min(top, h), min(bottom, h), min(left, w), min(right, w)
    patch = image_chw[..., top:bottom, left:right]
    visible = blurred_abs(heatmap_hw, kernel_size)[top:bottom, left:right] > vis_threshold
    keep = patch.numel() and bool(patch.sum() != 0) and bool(visible.any())
    return (top, bottom, left, right) if keep else (0, h, 0, w)


def crop(image_chw: Tensor, heatmap_hw: Tensor, threshold: float = PURE_THRESHOLD,
         kernel_size: int = PURE_KERNEL, vis_threshold: float = PURE_VIS_THRESHOLD) -> Tensor:
    """One image cropped by its heatmap as PURE's ``crop_and_mask_images`` (:func:`crop_box`)."""
    top, bottom, left, right = crop_box(image_chw, heatmap_hw, threshold, kernel_size, vis_threshold)
    return image_chw[..., top:bottom, left:right]


def pure_boxes(model: nn.Module, layer: str, channel: int, images_nchw: Tensor, threshold: float = PURE_THRESHOLD,
               kernel_size: int = PURE_KERNEL, composite=None, batch_size: int = 64) -> Tensor:
    """(N, 4) long ``(top, bottom, left, right)`` crop boxes (:func:`crop_box`) of each image to
    the receptive field of ``channel``'s maximally activating position, as PURE. Boxes, not
    crops, are what the run caches: a crop is ``image[:, top:bottom, left:right]``."""
    heat = lrp_heatmaps(model, layer, channel, images_nchw, composite=composite, batch_size=batch_size)
    boxes = [crop_box(img.detach(), hm, threshold, kernel_size) for img, hm in zip(images_nchw, heat)]
    return torch.tensor(boxes, dtype=torch.long).view(-1, 4)


def pure_crops(model: nn.Module, layer: str, channel: int, images_nchw: Tensor, threshold: float = PURE_THRESHOLD,
               kernel_size: int = PURE_KERNEL, composite=None, batch_size: int = 64) -> list[Tensor]:
    """Native-size crops (a list of (C, h, w) tensors in the images' own space) of each image
    to the receptive field of ``channel``'s maximally activating position, as PURE."""
    boxes = pure_boxes(model, layer, channel, images_nchw, threshold, kernel_size, composite, batch_size)
    return [img.detach()[..., top:bottom, left:right] for img, (top, bottom, left, right) in zip(images_nchw, boxes.tolist())]


def embed_native(embedder, crops: Sequence[Tensor], batch_size: int = 64) -> Tensor:
    """(N, D) embeddings of native-size [0, 1] crops: crops of one size are embedded together,
    in input order (the embedder does its own resizing, as CLIP's preprocessing in PURE)."""
    if not crops:
        raise ValueError("no crops to embed")
    by_size: dict[tuple[int, ...], list[int]] = {}
    for i, c in enumerate(crops):
        by_size.setdefault(tuple(c.shape), []).append(i)
    rows: list[Tensor | None] = [None] * len(crops)
    for idx in by_size.values():
        for s in range(0, len(idx), batch_size):
            chunk = idx[s:s + batch_size]
            emb = embedder.embed(torch.stack([crops[i] for i in chunk])).detach().double().cpu()
            for i, e in zip(chunk, emb):
                rows[i] = e
    return torch.stack(rows)  # type: ignore[arg-type]
