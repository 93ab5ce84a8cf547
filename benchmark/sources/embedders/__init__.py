"""Image embedders for embedding-distance metrics; each module registers one embedder."""
from __future__ import annotations

from torch import Tensor


def check_unit_rgb(images_nchw: Tensor) -> None:
    """Raise a specific error unless ``images_nchw`` is a float (N, 3, H, W) batch in [0, 1]."""
    if images_nchw.dim() != 4 or images_nchw.shape[1] != 3:
        raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images_nchw.shape)}")
    if not images_nchw.is_floating_point():
        raise TypeError(f"expected float RGB images in [0, 1], got {images_nchw.dtype}")
    if images_nchw.numel() and (images_nchw.min() < -0.01 or images_nchw.max() > 1.01):
        raise ValueError(f"expected RGB images in [0, 1], got values in [{float(images_nchw.min()):.2f}, "
                         f"{float(images_nchw.max()):.2f}]: map dataset images with dataset.to_unit_range first")
