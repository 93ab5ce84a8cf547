"""Small fakes shared by tests: an in-memory ImageDataset and tiny CNNs."""
from __future__ import annotations

import hashlib

import torch
from torch import nn

from benchmark.sources.datasets import ClassInfo, ImageDataset


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
    from benchmark.core.types import Context
    from benchmark.engine.capture import CaptureSpec, capture

    model = TinyNet(num_classes=num_classes, seed=seed).eval()
    fit = random_images(n=n, num_classes=num_classes, seed=seed)
    heldout = random_images(n=n // 2, num_classes=num_classes, seed=seed + 100)
    stats = capture(model, fit, CaptureSpec(layer, top_k=top_k, tau=tau), progress=False)
    return Context(model=model, model_name="tiny", layer=layer, fit=fit, heldout=heldout,
                   stats=stats, batch_size=16, seed=seed)


def planted_world_context(world_model, world_val, fit: range, heldout: range, num_pairs: int, batch_size: int):
    """(context, targets): ``num_pairs`` plainly planted channels of the trained world CNN at its
    default layer (partners from unrelated class groups, each part's concept its channel's top
    class), fit and held-out data the given index ranges of ``world_val``."""
    from benchmark.core.types import Context, Target
    from benchmark.engine.capture import CaptureSpec, capture
    from benchmark.planting.merge import choose_channel_pairs, class_selectivity, plant
    from benchmark.sources.datasets import Subset
    from benchmark.sources.world import DEFAULT_LAYER, WORLD_CLASSES

    layer = DEFAULT_LAYER
    fit_data, heldout_data = Subset(world_val, fit), Subset(world_val, heldout)
    group = {c.info.index: c.group for c in WORLD_CLASSES}
    base = capture(world_model, fit_data, CaptureSpec(layer, tau=None), progress=False)
    pairs = choose_channel_pairs(base, num_pairs, unrelated=lambda s, t: group[s] != group[t])
    top = {s.channel: s.top_class for s in class_selectivity(base)}
    classes = [((top[a],), (top[b],)) for a, b in pairs]
    model, truth = plant(world_model, layer, pairs, classes=classes)
    stats = capture(model, fit_data, CaptureSpec(layer, top_k=100, tau=0.03), progress=False)
    ctx = Context(model=model, model_name="world_cnn", layer=layer, fit=fit_data, heldout=heldout_data,
                  stats=stats, batch_size=batch_size, planted=truth)
    return ctx, [Target("world_cnn", layer, a, concepts=c) for (a, _), c in zip(pairs, classes)]
