"""Size of the cached capture statistics of a 1000-class model whose data use 6 classes.

    python scripts/capture_cache_size.py

A seeded random ResNet-50 (no weights can be downloaded here) on 32 of the package's noise
images (ImageNet labels cycling over 6 classes), layer4, tau = 0.03. Prints the bytes of
the statistics with dense 1000-class tables and of what the cache stores.
"""
from __future__ import annotations

import time

import torch
import torchvision

from benchmark.engine.capture import CaptureSpec, capture
from benchmark.sources.zoo.noise_images import NoiseImages


def nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def main() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()
    data = NoiseImages(size=32, image_size=224, used_classes=6)
    start = time.perf_counter()
    stats = capture(model, data, CaptureSpec("layer4", top_k=16, tau=0.03, batch_size=16), progress=False)
    took = time.perf_counter() - start
    dense = [v for v in vars(stats).values() if isinstance(v, torch.Tensor)]
    stored = stats.to_tensors().values()
    print(f"ResNet-50 layer4, 32 noise images of 6 of 1000 classes: capture {took:.1f} s; cached statistics "
          f"{nbytes(dense) / 1e6:.2f} MB dense -> {nbytes(stored) / 1e6:.3f} MB stored")


if __name__ == "__main__":
    main()
