"""Real labelled photos: Tux Paint photo cut-outs composited on varied backgrounds.

Each class is a WordNet category of :mod:`benchmark.sources.photos.classes` (bird, bovid, edible
fruit, ...); its source photos are the stamps mapped to it. Split by SOURCE photo: per
class the stamps are ordered by a hash of their path and every third one (at least one)
goes to ``val``, the rest to ``train``, so no photo is in both splits (the order does not
depend on the seed: the split is a property of the data).

Image ``i`` of a split has label ``i % C`` (classes interleave, so the runner's even
spread over indices keeps classes balanced) and shows photo ``(i // C) % n_c`` of that
class, augmented by a generator seeded with (seed, split, i): the cut-out is flipped
(p = 0.5), rotated (±20°), scaled (longer side 45-85% of the image), colour-jittered
(brightness, contrast, saturation ±25%) and placed at a random position on a random
background (a two-colour gradient, smooth coloured noise, or a flat colour with noise).
Every image is deterministic per (seed, split, index).
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from benchmark.core.errors import InputError, MissingFileError
from benchmark.sources.datasets import ImageDataset
from benchmark.sources.photos.classes import mapped_stamps, photo_classes, stamps
from benchmark.sources.zoo.efficientnet import LITE_MEAN, LITE_STD

SPLITS = ("train", "val")
VERSION = "1"  # bump when the generator changes (part of the fingerprint)
MEMO_BYTES = 1 << 30  # in-memory composites per dataset (1 GiB: 5,000 images at 128 px, 1,700 at 224 px)


def split_stamps(split: str) -> dict[int, tuple[str, ...]]:
    """Label -> stamp paths of ``split`` (a stamp is in exactly one split)."""
    if split not in SPLITS:
        raise InputError(f"unknown photo split {split!r}; allowed: {', '.join(SPLITS)}")
    out = {}
    for label, items in mapped_stamps().items():
        order = sorted((s.path for s in items), key=lambda p: hashlib.sha256(p.encode()).hexdigest())
        val = set(order[::3])  # every third, at least one
        out[label] = tuple(p for p in order if (p in val) == (split == "val"))
    return out


@lru_cache(maxsize=512)
def _load_cutout(path: str, longest: int = 320):
    """RGBA cut-out, shrunk so that its longer side is at most ``longest`` px."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            rgba = image.convert("RGBA")
    except OSError as err:
        raise OSError(f"cannot read stamp {path}: {err}; rerun python -m benchmark.sources.photos.setup") from err
    scale = longest / max(rgba.size)
    if scale < 1:
        rgba = rgba.resize((max(1, round(rgba.width * scale)), max(1, round(rgba.height * scale))), Image.LANCZOS)
    return rgba


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) uint8 background: gradient, smooth noise, or flat colour + noise."""
    kind = rng.integers(3)
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    if kind == 0:
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
        t = np.clip((np.cos(angle) * xx + np.sin(angle) * yy + 1) / 2, 0, 1)[..., None]
        img = a * (1 - t) + b * t
    elif kind == 1:
        cells = int(rng.integers(3, 9))
        from PIL import Image

        coarse = Image.fromarray(rng.uniform(0, 255, (cells, cells)).astype(np.uint8))
        t = np.asarray(coarse.resize((size, size), Image.BICUBIC), dtype=np.float64)[..., None] / 255.0
        img = a * (1 - t) + b * t
    else:
        img = np.broadcast_to(a, (size, size, 3)).astype(np.float64)
    img = img + rng.normal(0, rng.uniform(2, 12), (size, size, 3)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def composite(cutout, rng: np.random.Generator, size: int):
    """One augmented composite (PIL RGB, ``size`` x ``size``) of an RGBA cut-out."""
    from PIL import Image, ImageEnhance

    stamp = cutout
    if rng.random() < 0.5:
        stamp = stamp.transpose(Image.FLIP_LEFT_RIGHT)
    stamp = stamp.rotate(float(rng.uniform(-20, 20)), resample=Image.BILINEAR, expand=True)
    box = stamp.getbbox()
    if box is not None:
        stamp = stamp.crop(box)
    scale = float(rng.uniform(0.45, 0.85)) * size / max(stamp.size)
    stamp = stamp.resize((max(1, round(stamp.width * scale)), max(1, round(stamp.height * scale))), Image.BILINEAR)
    rgb, alpha = stamp.convert("RGB"), stamp.getchannel("A")
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        rgb = enhance(rgb).enhance(float(rng.uniform(0.75, 1.25)))
    canvas = Image.fromarray(_background(rng, size))
    x = int(rng.integers(0, max(1, size - stamp.width + 1)))
    y = int(rng.integers(0, max(1, size - stamp.height + 1)))
    canvas.paste(rgb, (x, y), alpha)
    return canvas


class StampPhotos(ImageDataset):
    """Composited photo stamps of one split (see the module docstring).

    Args:
        root: the stamps folder (from :func:`benchmark.sources.photos.setup.locate_stamps`).
        split: ``"train"`` (fit) or ``"val"`` (held-out).
        seed: augmentation seed.
        image_size: output side in pixels (224 = Lite0's input size).
        per_class: images per class (each photo of the class appears about
            ``per_class / photos`` times, differently augmented).
    """

    mean = LITE_MEAN
    std = LITE_STD

    def __init__(self, root: Path, split: str = "train", seed: int = 0, image_size: int = 224, per_class: int = 100):
        if per_class < 1:
            raise InputError(f"per_class must be >= 1, got {per_class}")
        if image_size < 16:
            raise InputError(f"image_size must be >= 16 px, got {image_size}")
        self.root, self.split, self.seed = Path(root), split, int(seed)
        self.image_size, self.per_class = int(image_size), int(per_class)
        self.classes = photo_classes()
        self.photos = split_stamps(split)
        for label, paths in self.photos.items():
            if not paths:
                raise InputError(f"class {self.classes[label].synset} has no photo in split {split!r}")
            missing = [p for p in paths if not (self.root / p).is_file()]
            if missing:
                raise MissingFileError(f"stamp {self.root / missing[0]} is missing ({len(missing)} of class "
                                        f"{self.classes[label].name}); rerun python -m benchmark.sources.photos.setup")
        C = len(self.classes)
        self.labels = torch.arange(C * self.per_class, dtype=torch.long) % C
        table = hashlib.sha256("\n".join(f"{s.path}:{s.status}:{s.category}" for s in stamps()).encode()).hexdigest()
        record = f"{VERSION}|{table}|{split}|{seed}|{image_size}|{per_class}"
        self.fingerprint = f"stamp-photos-{split}-{hashlib.sha256(record.encode()).hexdigest()[:16]}"
        # composites are deterministic per index and cost a few ms each (PIL): a run reads the same
        # images many times (capture, fine-tuning, every metric), so up to MEMO_BYTES are kept
        self._memo: dict[int, Tensor] = {}
        self._memo_items = max(0, MEMO_BYTES // (3 * self.image_size ** 2 * 4))

    def source(self, index: int) -> str:
        """The stamp (path relative to the stamps folder) that image ``index`` shows."""
        C = len(self.classes)
        paths = self.photos[index % C]
        return paths[(index // C) % len(paths)]

    def pil_image(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        rng = np.random.default_rng([self.seed, SPLITS.index(self.split), int(index)])
        return composite(_load_cutout(str(self.root / self.source(index))), rng, self.image_size)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        index = int(index)
        image = self._memo.get(index)
        if image is None:
            array = np.asarray(self.pil_image(index), dtype=np.float32) / 255.0  # numpy: no torch threads per image
            array = (array - np.float32(self.mean)) / np.float32(self.std)
            image = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
            if len(self._memo) < self._memo_items:
                self._memo[index] = image
        return image.clone(), int(self.labels[index])

    def __repr__(self) -> str:
        return f"StampPhotos(split={self.split!r}, images={len(self)}, classes={len(self.classes)}, seed={self.seed})"
