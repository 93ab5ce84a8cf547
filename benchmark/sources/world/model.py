"""The world CNN: a small ResNet whose residual blocks end in a 1x1 convolution.

Block i: ``conv1`` (3x3, stride) -> ``bn1`` -> ``relu1`` -> ``conv2`` (1x1, no bias) ->
``bn2`` -> + shortcut -> ``relu2``. The layer studied by default, :data:`DEFAULT_LAYER`
= ``"blocks.2.conv2"``, is the last block's 1x1 conv: its output is taken BEFORE its
batch norm, the residual add and the ReLU, and its input is the post-ReLU output of the
block's first conv, exactly like ``layer4.2.conv3`` of ResNet-50 in Hesse et al. (CVPR-W
2025, arXiv 2504.12939). So layer l-1 -> l is one linear map (64 -> 64 channels, 8x8).

Trained on the synthetic world's train split (AdamW, one-cycle) and cached by config hash.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from torch import Tensor, nn

from benchmark.sources.world.dataset import SyntheticWorld, config_digest
from benchmark.sources.world.generator import WorldConfig
from benchmark.sources.world.training import TrainConfig, fit, load_or_train, predict, seeded

DEFAULT_LAYER = "blocks.2.conv2"
WIDTHS: tuple[int, ...] = (16, 32, 64, 64)  # stem, block 0, block 1, block 2
STRIDES: tuple[int, ...] = (2, 2, 1)
MODEL_VERSION = 1


class Block(nn.Module):
    """A residual block ending in a bias-free 1x1 conv (the ARV paper's linear layer)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        h = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(h + self.shortcut(x))


class WorldCNN(nn.Module):
    """Stem (3x3 conv) + residual blocks + global average pool + linear classifier ``fc``."""

    default_layer = DEFAULT_LAYER  # read by the runner when a config names no layer

    def __init__(self, num_classes: int = 16, widths: tuple[int, ...] = WIDTHS, strides: tuple[int, ...] = STRIDES):
        super().__init__()
        if len(widths) != len(strides) + 1:
            raise ValueError(f"need one more width than strides (stem + blocks), got {widths}, {strides}")
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        self.blocks = nn.ModuleList(Block(widths[i], widths[i + 1], s) for i, s in enumerate(strides))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        return self.fc(self.pool(h).flatten(1))


def _logits(model: nn.Module, x: Tensor) -> dict[str, Tensor]:
    return {"label": model(x)}


def accuracy(model: nn.Module, dataset: SyntheticWorld) -> float:
    """Top-1 accuracy of ``model`` on a synthetic-world dataset (model mode is restored)."""
    pred = predict(model, dataset.images_u8, _logits)["label"]
    return float((pred == dataset.labels).float().mean())


def world_cnn_spec(seed: int = 0, world_seed: int = 0, config: WorldConfig = WorldConfig(),
                   train: TrainConfig = TrainConfig(), train_size: int = 20_000) -> dict:
    """Everything that determines the trained weights (the cache key)."""
    return {"model": "world_cnn", "version": MODEL_VERSION, "widths": list(WIDTHS), "strides": list(STRIDES),
            "seed": seed, "world_seed": world_seed, "world": config_digest(config), "train": asdict(train),
            "train_size": train_size}


def train_world_cnn(seed: int = 0, world_seed: int = 0, config: WorldConfig = WorldConfig(),
                    train: TrainConfig = TrainConfig(), train_size: int = 20_000,
                    val_size: int = 4_000, progress: bool = True) -> tuple[WorldCNN, dict]:
    """Train a world CNN from scratch: (eval-mode model, info with val accuracy and time)."""
    data = SyntheticWorld("train", size=train_size, seed=world_seed, config=config)
    with seeded(seed):
        model = WorldCNN(num_classes=data.num_classes)
    start = time.perf_counter()
    fit(model, data.images_u8, {"label": data.labels}, _logits, train, seed, desc="world_cnn", progress=progress)
    seconds = time.perf_counter() - start
    val = SyntheticWorld("val", size=val_size, seed=world_seed, config=config)
    return model, {"val_accuracy": accuracy(model, val), "train_seconds": round(seconds, 1)}


def load_world_cnn(weights: str | Path | None = None, seed: int = 0, world_seed: int = 0,
                   config: WorldConfig = WorldConfig(), train: TrainConfig = TrainConfig(),
                   train_size: int = 20_000, val_size: int = 4_000, progress: bool = True) -> WorldCNN:
    """The trained world CNN in eval mode: from ``weights`` (a local file) if given, else
    from the cache, training and caching it on a miss (about a minute on 2 idle cores).
    ``val_size`` images of the val split measure the accuracy recorded after training.
    ``model.world_info`` holds the validation accuracy, training time and weights path."""
    spec = world_cnn_spec(seed, world_seed, config, train, train_size)
    return load_or_train("world_cnn", WorldCNN(), spec, weights,
                         lambda: train_world_cnn(seed, world_seed, config, train, train_size, val_size, progress))
