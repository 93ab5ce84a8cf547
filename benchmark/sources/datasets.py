"""The dataset interface every model/metric/method sees, and class identity helpers.

An :class:`ImageDataset` yields ``(image_chw_float, label)`` pairs of preprocessed images,
exposes ``labels`` (all labels, without loading images), ``classes`` (one
:class:`ClassInfo` per label: WordNet id, synset name, readable name) and a
``fingerprint`` that identifies its content and preprocessing for the cache.

A file-backed dataset raises :class:`UnreadableImageError` (naming the file) for an image
it cannot decode; :func:`without_unreadable` drops such images up front (the config's
``data.skip_unreadable``) and says which.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from benchmark.core.errors import InputError, PolysemyError


@dataclass(frozen=True)
class ClassInfo:
    """One class: its label index, WordNet id (``n01440764``), nltk synset name
    (``tench.n.01``) and a readable name."""

    index: int
    wnid: str
    synset: str
    name: str


class ImageDataset(Dataset):
    """Base class: subclasses set ``classes``, ``labels`` and ``fingerprint`` and implement
    ``__getitem__``/``__len__``."""

    classes: tuple[ClassInfo, ...]
    labels: Tensor  # (N,) long
    fingerprint: str
    # per-channel mean/std applied by the preprocessing; images = (unit - mean) / std
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def to_unit_range(self, images_nchw: Tensor) -> Tensor:
        """Undo the normalisation: model-input images -> RGB in [0, 1] (for embedders)."""
        mean = torch.tensor(self.mean, dtype=images_nchw.dtype, device=images_nchw.device)[:, None, None]
        std = torch.tensor(self.std, dtype=images_nchw.dtype, device=images_nchw.device)[:, None, None]
        return (images_nchw * std + mean).clamp(0.0, 1.0)

    def from_unit_range(self, images_nchw: Tensor) -> Tensor:
        """RGB in [0, 1] -> model-input images (for feature visualisation)."""
        mean = torch.tensor(self.mean, dtype=images_nchw.dtype, device=images_nchw.device)[:, None, None]
        std = torch.tensor(self.std, dtype=images_nchw.dtype, device=images_nchw.device)[:, None, None]
        return (images_nchw - mean) / std

    def __len__(self) -> int:
        return int(self.labels.numel())

    def __getitem__(self, index: int) -> tuple[Tensor, int]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def indices_of(self, class_ids: Sequence[int]) -> Tensor:
        """Dataset indices of every sample whose label is in ``class_ids``."""
        for c in class_ids:
            if not 0 <= int(c) < self.num_classes:
                raise ValueError(f"class index {c} out of range: this dataset has {self.num_classes} classes")
        mask = torch.isin(self.labels, torch.as_tensor(list(class_ids), dtype=torch.long))
        return mask.nonzero().flatten()

    def images(self, indices: Sequence[int] | Tensor) -> Tensor:
        """Stack the images at ``indices`` into one (N, C, H, W) tensor."""
        idx = [int(i) for i in (indices.tolist() if isinstance(indices, Tensor) else indices)]
        if not idx:
            raise ValueError("no indices given")
        return torch.stack([self[i][0] for i in idx])


class UnreadableImageError(PolysemyError, OSError):
    """An image file that cannot be opened or decoded (corrupt, truncated, not an image)."""

    def __init__(self, path, reason: object):
        super().__init__(f"cannot read image {path}: {reason}; fix or remove the file, or set "
                         f"data.skip_unreadable = true to leave unreadable images out (they are listed in run.json)")
        self.path = str(path)


def without_unreadable(dataset: ImageDataset, progress: bool = False, desc: str = "check images"
                       ) -> tuple[ImageDataset, list[str]]:
    """(``dataset`` without the images that raise UnreadableImageError, their paths).
    Reads every image once; returns ``dataset`` itself when all are readable."""
    from tqdm.auto import tqdm

    bad: dict[int, str] = {}
    for i in tqdm(range(len(dataset)), desc=desc, disable=not progress, unit="image"):
        try:
            dataset[i]
        except UnreadableImageError as err:
            bad[i] = err.path
    if not bad:
        return dataset, []
    keep = [i for i in range(len(dataset)) if i not in bad]
    if not keep:
        raise InputError(f"every image of the dataset is unreadable (first: {next(iter(bad.values()))})")
    return Subset(dataset, keep), list(bad.values())


class Subset(ImageDataset):
    """A fixed subset of another dataset (keeps classes; fingerprint includes the indices)."""

    def __init__(self, base: ImageDataset, indices: Sequence[int] | Tensor):
        self.base = base
        self.indices = torch.as_tensor(indices, dtype=torch.long).flatten()
        self.classes = base.classes
        self.labels = base.labels[self.indices]
        self.mean, self.std = base.mean, base.std
        digest = hashlib.sha256(self.indices.numpy().tobytes()).hexdigest()[:16]
        self.fingerprint = f"{base.fingerprint}/subset-{digest}"

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.base[int(self.indices[index])]


def class_by_name(dataset: ImageDataset, name_or_wnid: str) -> ClassInfo:
    """Find a class by wnid, synset name or readable name."""
    for c in dataset.classes:
        if name_or_wnid in (c.wnid, c.synset, c.name):
            return c
    raise InputError(f"no class {name_or_wnid!r} in this dataset (it has {dataset.num_classes} classes)")
