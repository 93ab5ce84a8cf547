"""Generated noise images with ImageNet labels, for speed and memory benchmarks on real
architectures (e.g. ResNet-50 at 224 px with random weights) where no data may be downloaded.
Deterministic per (seed, index); the numbers they give measure cost, never quality."""
from __future__ import annotations

import torch
from torch import Tensor

from benchmark.core.errors import InputError
from benchmark.core.registry import DATASETS
from benchmark.sources.datasets import ImageDataset


class NoiseImages(ImageDataset):
    """``size`` smooth random images of ``image_size`` px; labels cycle over the first
    ``used_classes`` ImageNet classes so every used class has several images."""

    def __init__(self, size: int = 512, image_size: int = 224, seed: int = 0, split: str = "train",
                 used_classes: int = 16):
        from benchmark.sources.zoo.imagenet import imagenet_classes

        if size < 1 or image_size < 8:
            raise InputError(f"need size >= 1 and image_size >= 8, got {size}, {image_size}")
        self.classes = imagenet_classes()
        self.size, self.image_size = size, image_size
        self.seed = seed + (0 if split == "train" else 1_000_003)
        self.labels = torch.arange(size) % min(used_classes, len(self.classes))
        self.fingerprint = f"noise-{size}-{image_size}-{self.seed}"

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        if not 0 <= index < self.size:
            raise IndexError(index)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        coarse = torch.randn(1, 3, self.image_size // 8, self.image_size // 8, generator=g)
        image = torch.nn.functional.interpolate(coarse, size=self.image_size, mode="bilinear", align_corners=False)[0]
        return image, int(self.labels[index])


@DATASETS.register("noise_images", description="generated noise images with ImageNet labels (cost benchmarks only)")
def noise_images(split: str = "train", size: int = 512, image_size: int | None = None, seed: int = 0, **_unused) -> NoiseImages:
    return NoiseImages(size=size, image_size=image_size or 224, seed=seed, split=split)
