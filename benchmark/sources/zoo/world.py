"""Registers the synthetic world: the ``world_cnn`` model and the ``synthetic_world`` dataset.

The embedded offline default of the benchmark (DESIGN.md, "The embedded default"); see
``benchmark.sources.world`` for the generator, the classes and the training.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from benchmark.core.errors import InputError
from benchmark.core.registry import ARCHITECTURES, DATASETS, MODELS


@MODELS.register("world_cnn")
def world_cnn(weights: str | Path | None = None, seed: int = 0, data_seed: int = 0, progress: bool = True,
              **kw) -> nn.Module:
    """Small ResNet trained on the synthetic world (default layer ``blocks.2.conv2``).

    ``seed``: the model seed (initialisation, shuffling); ``data_seed``: the world whose
    train split it learns; ``weights``: a local weights file to load instead of the
    cached/trained model; ``progress``: training progress bar on a cache miss; further
    keywords (``config``, ``train``) go to
    :func:`benchmark.sources.world.load_world_cnn`.
    """
    from benchmark.sources.world.model import load_world_cnn

    return load_world_cnn(weights=weights, seed=seed, world_seed=data_seed, progress=progress, **kw)


@ARCHITECTURES.register("world_cnn")
def world_cnn_architecture() -> nn.Module:
    """The world CNN untrained (its layer names, for the pre-flight checks)."""
    from benchmark.sources.world.model import WorldCNN

    return WorldCNN()


@DATASETS.register("synthetic_world")
def synthetic_world(split: str = "train", seed: int = 0, image_size: int | None = None,
                    root: str | None = None, **kw):
    """Procedurally generated 32x32 images of 16 WordNet classes with their generating factors.

    ``image_size`` renders another size (the world CNN is trained at 32); ``root`` must be
    None (nothing is read from disk). Keywords ``size`` and ``config`` go to
    :class:`benchmark.sources.world.SyntheticWorld`.
    """
    from benchmark.sources.world.dataset import SyntheticWorld
    from benchmark.sources.world.generator import WorldConfig

    if root is not None:
        raise InputError(f"synthetic_world is generated in memory and reads no files; got root={root!r} (leave it unset)")
    if image_size is not None:
        if "config" in kw:
            raise InputError("give either image_size or config, not both")
        kw["config"] = WorldConfig(image_size=int(image_size))
    return SyntheticWorld(split, seed=seed, **kw)
