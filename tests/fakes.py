"""Small fakes shared by tests: an in-memory ImageDataset and tiny CNNs."""
from __future__ import annotations

import hashlib

import torch
from torch import nn

from benchmark.datasets import ClassInfo, ImageDataset


class TensorImages(ImageDataset):
    """An ImageDataset over given tensors (classes get placeholder WordNet ids)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None):
        self.data = images.float()
        self.labels = labels.long()
        n = int(num_classes if num_classes is not None else labels.max() + 1)
        self.classes = tuple(ClassInfo(i, f"n{i:08d}", f"class{i}.n.01", f"class {i}") for i in range(n))
        self.fingerprint = "tensors-" + hashlib.sha256(
            self.data.numpy().tobytes() + self.labels.numpy().tobytes()).hexdigest()[:16]

    def __getitem__(self, index: int):
        return self.data[index], int(self.labels[index])


def random_images(n: int = 24, num_classes: int = 4, size: int = 16, seed: int = 0) -> TensorImages:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, size, size, generator=g)
    labels = torch.arange(n) % num_classes
    return TensorImages(images, labels, num_classes)


class TinyNet(nn.Module):
    """conv3x3 -> ReLU -> conv1x1 (the 'layer', linear, no bias) -> ReLU -> pool -> fc."""

    def __init__(self, num_classes: int = 4, width: int = 8, out: int = 6, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(width, out, 1, bias=False)
        self.act2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(out, num_classes)

    def forward(self, x):
        x = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.fc(self.pool(x).flatten(1))


def tiny_context(layer: str = "conv2", n: int = 48, num_classes: int = 4, seed: int = 0, top_k: int = 10, tau=0.05):
    """A complete Context over TinyNet and random images (fit and held-out differ)."""
    from benchmark.capture import CaptureSpec, capture
    from benchmark.types import Context

    model = TinyNet(num_classes=num_classes, seed=seed).eval()
    fit = random_images(n=n, num_classes=num_classes, seed=seed)
    heldout = random_images(n=n // 2, num_classes=num_classes, seed=seed + 100)
    stats = capture(model, fit, CaptureSpec(layer, top_k=top_k, tau=tau), progress=False)
    return Context(model=model, model_name="tiny", layer=layer, fit=fit, heldout=heldout,
                   stats=stats, batch_size=16, seed=seed)
