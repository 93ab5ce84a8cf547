"""The synthetic world as an :class:`~benchmark.sources.datasets.ImageDataset`.

Images are rendered once, on construction, into one uint8 tensor (20,000 train images at
32x32 are 60 MB) and normalised to floats in [-1, 1] on access. Every image carries its
generating factors (``dataset.factors``: a dict of (N,) tensors, see
``benchmark.sources.world.generator.sample_factors``).
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict
from typing import Sequence

import torch
from torch import Tensor

from benchmark.sources.datasets import ImageDataset
from benchmark.sources.world.classes import CLASS_INFOS
from benchmark.sources.world.generator import GENERATOR_VERSION, SPLITS, WorldConfig, generate

DEFAULT_SIZES: dict[str, int] = {"train": 20_000, "val": 4_000, "test": 4_000}
# Input normalisation of the world: x = (u8 / 255 - MEAN) / STD, i.e. [0, 255] -> [-1, 1].
MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
STD: tuple[float, float, float] = (0.5, 0.5, 0.5)


def to_input(images_u8: Tensor) -> Tensor:
    """uint8 images (N, 3, H, W) or (3, H, W) -> the network's input space [-1, 1]."""
    if images_u8.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {images_u8.dtype}")
    return images_u8.float().div_(127.5).sub_(1.0)


def to_unit(images: Tensor) -> Tensor:
    """Network-input images back to [0, 1] RGB for display."""
    return ((images + 1.0) / 2.0).clamp(0.0, 1.0)


def config_digest(config: WorldConfig) -> str:
    """Short hash of a world config (part of fingerprints and cache keys)."""
    text = json.dumps({"v": GENERATOR_VERSION, **asdict(config)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@functools.lru_cache(maxsize=6)
def _render_split(config: WorldConfig, split: str, size: int, seed: int) -> tuple[Tensor, dict[str, Tensor]]:
    images, factors = generate(range(size), seed=seed, split=split, config=config)
    return images, factors


class SyntheticWorld(ImageDataset):
    """A split of the synthetic world: ``SyntheticWorld("train", size=20000, seed=0)``.

    ``images_u8`` (N, 3, S, S) uint8, ``labels`` (N,), ``factors`` (dict of (N,)
    tensors), ``classes`` (16 WordNet synsets). Identical arguments give identical images;
    splits use disjoint random streams. Rendered splits are memoised per process, so the
    tensors are shared between instances: treat them as read-only.
    """

    def __init__(self, split: str = "train", size: int | None = None, seed: int = 0,
                 config: WorldConfig | None = None):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}: allowed {sorted(SPLITS)}")
        size = DEFAULT_SIZES[split] if size is None else int(size)
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.split, self.size, self.seed = split, size, int(seed)
        self.config = config if config is not None else WorldConfig()
        self.images_u8, self.factors = _render_split(self.config, split, size, self.seed)
        self.labels = self.factors["label"]
        self.classes = CLASS_INFOS
        self.mean, self.std = MEAN, STD
        self.fingerprint = (f"synthetic_world-v{GENERATOR_VERSION}/{config_digest(self.config)}"
                            f"/{split}/seed{self.seed}/n{size}")

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        i = int(index)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        return to_input(self.images_u8[i]), int(self.labels[i])

    def images(self, indices: Sequence[int] | Tensor) -> Tensor:
        """(N, 3, S, S) float images at ``indices`` (vectorised)."""
        idx = torch.as_tensor(indices, dtype=torch.long).flatten()
        if idx.numel() == 0:
            raise ValueError("no indices given")
        return to_input(self.images_u8[idx])

    def __repr__(self) -> str:
        return f"SyntheticWorld(split={self.split!r}, size={self.size}, seed={self.seed})"
