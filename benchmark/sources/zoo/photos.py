"""Registers the real-photo dataset ``stamp_photos`` (see :mod:`benchmark.sources.photos`)."""
from __future__ import annotations

from benchmark.core.registry import DATASETS


@DATASETS.register("stamp_photos")
def stamp_photos(split: str = "train", seed: int = 0, image_size: int | None = None, root: str | None = None,
                 per_class: int = 100):
    """Tux Paint photo cut-outs of 16 WordNet categories composited on varied backgrounds.

    ``root``: the stamps folder (default: the provisioned one, ``python -m
    benchmark.sources.photos.setup``); ``image_size`` defaults to 224 (Lite0's input size);
    ``per_class`` images per class and split.
    """
    from benchmark.sources.photos.dataset import StampPhotos
    from benchmark.sources.photos.setup import locate_stamps

    folder = root if root is not None else locate_stamps(required=True)
    return StampPhotos(folder, split=split, seed=seed, image_size=image_size or 224, per_class=per_class)
