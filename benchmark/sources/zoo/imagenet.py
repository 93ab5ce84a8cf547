"""ImageNet-1k (ILSVRC-2012) as an image folder, with WordNet identities for its classes.

Layout expected (the usual ImageFolder one): ``root/train/<wnid>/*.JPEG`` and
``root/val/<wnid>/*.JPEG``. Labels are ImageNet-1k class indices: the position of the
wnid in the sorted list of the 1000 ILSVRC-2012 wnids (index 0 = n01440764 tench), the
order every torchvision/timm ImageNet classifier uses. A root holding only some of the
1000 wnid folders keeps those indices (so published channel/class pairs keep their
meaning): ``classes`` is always all 1000 :class:`ClassInfo` (``classes[label]`` is the
label's class) and ``labels`` only takes the values of the folders present.

The class table ships as ``benchmark/data/imagenet_classes.tsv`` (index, wnid, nltk
synset name, readable name, ILSVRC lemmas): wnids and lemmas from timm's
``imagenet_synsets.txt``/``imagenet_synset_to_lemma.txt`` (huggingface/
pytorch-image-models), synset names computed once from WordNet 3.0 by offset, so no
WordNet is needed here. Preprocessing is the standard evaluation one (resize 256,
centre crop 224, ImageNet mean/std), as in the ARV and PURE experiments.
"""
from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from benchmark.core.errors import InputError, InputTypeError, MissingFileError
from benchmark.core.registry import DATASETS
from benchmark.sources.datasets import ClassInfo, ImageDataset, UnreadableImageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPLITS = ("train", "val")
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp")  # matched case-insensitively
CLASS_TABLE = "imagenet_classes.tsv"


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[ClassInfo, ...]:
    """The 1000 ImageNet-1k classes in label order (``ClassInfo(0, 'n01440764',
    'tench.n.01', 'tench')``). Readable names are ILSVRC's first lemma and are not all
    unique (two 'crane', two 'maillot'); wnids and synset names are."""
    text = resources.files("benchmark").joinpath("data").joinpath(CLASS_TABLE).read_text(encoding="utf-8")
    lines = text.splitlines()
    if lines[0].split("\t")[:4] != ["index", "wnid", "synset", "name"]:
        raise RuntimeError(f"{CLASS_TABLE}: unexpected header {lines[0]!r}")
    classes = []
    for position, line in enumerate(lines[1:]):
        index, wnid, synset, name = line.split("\t")[:4]
        if int(index) != position:
            raise RuntimeError(f"{CLASS_TABLE}: row {position} has index {index}")
        classes.append(ClassInfo(position, wnid, synset, name))
    return tuple(classes)


@lru_cache(maxsize=1)
def imagenet_wnid_to_index() -> dict[str, int]:
    """wnid -> ImageNet-1k class index."""
    return {c.wnid: c.index for c in imagenet_classes()}


def imagenet_eval_transform(image_size: int = 224, resize_size: int | None = None) -> Callable[[Any], Tensor]:
    """Standard evaluation preprocessing: Resize(256), CenterCrop(224), ToTensor,
    Normalize(ImageNet mean/std). ``image_size`` scales the resize by 256/224 unless
    ``resize_size`` is given (small sizes keep tests fast)."""
    from torchvision import transforms as T

    if int(image_size) < 1:
        raise InputError(f"image_size must be a positive number of pixels, got {image_size}")
    resize = int(resize_size) if resize_size is not None else round(image_size * 256 / 224)
    if resize < image_size:
        raise InputError(f"resize_size {resize} is smaller than the crop image_size {image_size}")
    return T.Compose([T.Resize(resize), T.CenterCrop(image_size), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def _normalisation(transform) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the ``Normalize`` step of a torchvision transform (inside a Compose);
    (0, 0, 0), (1, 1, 1) when it has none."""
    from torchvision import transforms as T

    steps = transform.transforms if isinstance(transform, T.Compose) else [transform]
    for step in steps:
        if isinstance(step, T.Normalize):
            return tuple(float(m) for m in step.mean), tuple(float(v) for v in step.std)
    return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def scan_split(folder: Path) -> list[tuple[str, int, int]]:
    """``(relative path, label, size in bytes)`` for every image under ``folder``'s wnid
    folders, sorted by path; no image is opened.

    Raises:
        ValueError: a folder is not an ImageNet-1k wnid, images lie directly in
            ``folder``, or there are no images at all.
    """
    index = imagenet_wnid_to_index()
    entries = sorted(os.scandir(folder), key=lambda e: e.name)
    loose = [e.name for e in entries if e.is_file() and _is_image(e.name)]
    if loose:
        raise InputError(f"{folder} holds images directly ({loose[0]!r}, ...); ImageNetFolder needs them "
                         "sorted into one folder per wnid (e.g. val/n01440764/ILSVRC2012_val_00000293.JPEG)")
    samples: list[tuple[str, int, int]] = []
    for entry in entries:
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        if entry.name not in index:
            raise InputError(f"folder {entry.path!r} is not an ImageNet-1k class: {entry.name!r} is not one of "
                             "the 1000 ILSVRC-2012 wnids (like 'n01440764'); remove or move it")
        before = len(samples)
        for dirpath, dirnames, filenames in os.walk(entry.path, followlinks=True):
            dirnames.sort()
            for name in sorted(filenames):
                if _is_image(name):
                    path = os.path.join(dirpath, name)
                    samples.append((os.path.relpath(path, folder), index[entry.name], os.stat(path).st_size))
        if len(samples) == before:
            raise InputError(f"class folder {entry.path!r} holds no images (files ending in "
                             f"{', '.join(IMAGE_EXTENSIONS)}); add its images or remove the folder")
    if not samples:
        raise InputError(f"no images in {folder}: expected wnid folders holding files ending in "
                         f"{', '.join(IMAGE_EXTENSIONS)} (any case)")
    return samples


class ImageNetFolder(ImageDataset):
    """ImageNet ``train`` or ``val`` split read from ``root/<split>/<wnid>/<image>``.

    Args:
        root: folder holding ``train/`` and/or ``val/``.
        split: ``"val"`` or ``"train"``.
        transform: PIL image -> tensor; default :func:`imagenet_eval_transform`.

    ``labels`` are ImageNet-1k indices and ``classes`` all 1000 classes, also when only
    some wnid folders exist. ``fingerprint`` hashes the root path, split, sorted file list
    with sizes and the transform's description.
    """

    def __init__(self, root: str | os.PathLike, split: str = "val", transform: Callable[[Any], Tensor] | None = None):
        if split not in SPLITS:
            raise InputError(f"unknown ImageNet split {split!r}; allowed: {', '.join(SPLITS)}")
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise MissingFileError(f"ImageNet root {self.root} is not a folder (expected one holding "
                                    "train/ and val/, each with one folder per wnid)")
        self.split = split
        self.folder = self.root / split
        if not self.folder.is_dir():
            present = sorted(p.name for p in self.root.iterdir() if p.is_dir())
            raise MissingFileError(f"ImageNet split folder {self.folder} is missing (found folders: "
                                    f"{', '.join(present) or 'none'}); expected {split}/<wnid>/<images>")
        self.transform = transform if transform is not None else imagenet_eval_transform()
        self.mean, self.std = _normalisation(self.transform)  # to_unit_range undoes it (crops, embedders)
        scanned = scan_split(self.folder)
        self.files = tuple(path for path, _, _ in scanned)
        self.labels = torch.tensor([label for _, label, _ in scanned], dtype=torch.long)
        self.classes = imagenet_classes()
        record = {"root": str(self.root), "split": split, "transform": repr(self.transform),
                  "files": [[path, size] for path, _, size in scanned]}
        digest = hashlib.sha256(json.dumps(record, separators=(",", ":")).encode()).hexdigest()[:16]
        self.fingerprint = f"imagenet-{split}-{digest}"

    def present_classes(self) -> tuple[ClassInfo, ...]:
        """The classes that have at least one image here."""
        return tuple(self.classes[i] for i in torch.unique(self.labels).tolist())

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        from PIL import Image

        path = self.folder / self.files[index]
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as err:  # corrupt, truncated, not an image
            raise UnreadableImageError(path, err) from None
        return self.transform(rgb), int(self.labels[index])

    def __repr__(self) -> str:
        return f"ImageNetFolder(root={str(self.root)!r}, split={self.split!r}, images={len(self)})"


@DATASETS.register("imagenet", description="ImageNet-1k train/val from a local folder of wnid folders (needs root=)")
def imagenet(split: str = "val", root: str | os.PathLike | None = None, image_size: int = 224, **kw: Any) -> ImageNetFolder:
    """Build :class:`ImageNetFolder` with the evaluation transform at ``image_size``.

    Extra keywords: ``resize_size`` (default ``image_size * 256/224``) or ``transform``
    (replaces the evaluation transform).
    """
    if root is None:
        raise InputError("the 'imagenet' dataset needs its location: pass root='/path/to/imagenet' (a folder "
                         "with train/ and val/ of wnid folders) or set root in the config's dataset section")
    allowed = {"resize_size", "transform"}
    unknown = sorted(set(kw) - allowed)
    if unknown:
        raise InputTypeError(f"imagenet() got unexpected arguments {unknown}; allowed: split, root, image_size, "
                        f"{', '.join(sorted(allowed))}")
    transform = kw.get("transform") or imagenet_eval_transform(image_size, kw.get("resize_size"))
    return ImageNetFolder(root, split=split, transform=transform)
