"""Split cards: what one method did to one target, as plain data a report can show.

A card holds, for one (track, target, method) unit of a run:

* the ORIGINAL channel's top references: the first ``n_original`` images of the target's
  shared reference pool (:func:`benchmark.engine.pool.reference_pool`: held-out images by
  maximum activation, PURE's ranking), each with its PURE receptive-field box
  (:func:`benchmark.engine.crops.pure_boxes`: LRP of the channel seeded at its maximum
  position, 2% threshold, as the embedding-separation metric crops; stored as fractions of
  the image side), its activation, class and, where the channel is planted, the planted part
  that drives it (the same argmax-of-positive-sums rule as the oracle and the ARI);
* per virtual neuron: the pool images the split assigns to it
  (:func:`benchmark.engine.pool.pool_labels`), the ``per_neuron`` with the largest positive
  response of that neuron first, recorded like the original's, the neuron's share of the
  pool, and images a metric contributed (feature visualisations of
  ``embedding_separation``: :meth:`benchmark.core.plugins.Metric.card_images`).

Images are written once per run folder as content-addressed WebP thumbnails
(``thumbs/<sha>.webp``, at most ``THUMB_SIDE`` pixels a side): the same image shown by many
cards is one file, and a card names its thumbnails by hash. The card itself is JSON
(``cards/<unit>.json``), written atomically before the unit's part, so a resumed run never
finds a part without its card. Nothing here ranks or scores: the numbers beside a card come
from ``results.csv``.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmark.core.types import Context, Split
from benchmark.engine.crops import PURE_THRESHOLD, pure_boxes
from benchmark.engine.pool import batches, heldout_max_activations, pool_labels, positive_sums, reference_pool
from benchmark.storage.cache import atomic_write, atomic_write_text

CARD_VERSION = 1
THUMB_SIDE = 112  # pixels: sized for a card's grid (the report shows them at 96-112 px)
WEBP_QUALITY = 82
MEMO_SECTION, MEMO_SIZE = "card_images", 8  # context.memo: (model, held-out data) -> boxes and thumbnails per target


def thumbnail(image_unit_chw: Tensor, side: int = THUMB_SIDE) -> bytes:
    """WebP bytes of an RGB image in [0, 1], resized so its longer side is at most ``side``."""
    from PIL import Image

    x = image_unit_chw.detach().float().cpu().clamp(0, 1)
    if x.dim() != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"a thumbnail needs a (3, H, W) or (1, H, W) image, got shape {tuple(x.shape)}")
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    h, w = x.shape[-2:]
    scale = min(1.0, side / max(h, w))
    if scale < 1.0:
        x = F.interpolate(x[None], size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="bilinear",
                          align_corners=False, antialias=True)[0]
    pixels = (x * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="WEBP", quality=WEBP_QUALITY, method=4)
    return buffer.getvalue()


def write_thumbnail(folder: Path, data: bytes) -> str:
    """Store ``data`` as ``folder/<sha>.webp`` once (atomic); returns the file name."""
    name = hashlib.sha256(data).hexdigest()[:24] + ".webp"
    path = folder / name
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda p: Path(p).write_bytes(data))
    return name


class _TargetImages:
    """Per target: PURE boxes and thumbnail names of held-out images, computed once for all
    the methods' cards (kept in the run's memo)."""

    def __init__(self, context: Context, layer: str, channel: int, thumbs: Path):
        self.context, self.layer, self.channel, self.thumbs = context, layer, channel, thumbs
        self.boxes: dict[int, list[float]] = {}
        self.names: dict[int, str] = {}
        self._owners: dict[int, Tensor | None] = {}

    def owners(self, ids: Tensor, pool_size: int) -> Tensor | None:
        """The planted part driving each pool image (None without planted truth): it depends
        on the target only, so every method's card shares it."""
        if pool_size not in self._owners:
            truth = self.context.planted.get(self.channel)
            self._owners[pool_size] = (positive_sums(truth.parts_fn, self.context, ids).argmax(1)
                                       if truth is not None else None)
        return self._owners[pool_size]

    def prepare(self, ids: Sequence[int]) -> None:
        todo = [i for i in dict.fromkeys(int(j) for j in ids) if i not in self.names]
        if not todo:
            return
        ctx = self.context
        done = 0
        for images, _ in batches(ctx.heldout, torch.tensor(todo), ctx.batch_size, ctx.device):
            with torch.enable_grad():
                boxes = pure_boxes(ctx.model, self.layer, self.channel, images, threshold=PURE_THRESHOLD,
                                   batch_size=ctx.batch_size).cpu()
            unit = ctx.heldout.to_unit_range(images).cpu()
            h, w = unit.shape[-2:]
            for j, (img, (top, bottom, left, right)) in enumerate(zip(unit, boxes.tolist())):
                index = todo[done + j]
                self.boxes[index] = [round(top / h, 4), round(bottom / h, 4), round(left / w, 4), round(right / w, 4)]
                self.names[index] = write_thumbnail(self.thumbs, thumbnail(img))
            done += len(unit)


def _images_of(context: Context, split: Split, thumbs: Path) -> _TargetImages:
    t = split.target
    return context.memo.get(MEMO_SECTION, (context.model, context.heldout), (t.layer, t.channel, str(thumbs)),
                            lambda: _TargetImages(context, t.layer, t.channel, thumbs), MEMO_SIZE)


def _names(context: Context, concepts) -> list[str] | None:
    if not concepts:
        return None
    classes = context.heldout.classes
    return ["+".join(classes[c].name for c in cs) for cs in concepts]


def compute_card(split: Split, context: Context, thumbs: Path, n_original: int = 8, per_neuron: int = 6,
                 pool_size: int = 100, extra_images: Mapping[str, tuple[Tensor, Sequence[int]]] | None = None,
                 about: Mapping[str, Any] | None = None) -> dict:
    """The card of ``split`` (see the module docstring); ``about`` adds identity fields
    (track, method parameters, ...); ``extra_images`` maps a title to (images in [0, 1],
    neuron of each image)."""
    t = split.target
    ids = reference_pool(context, t.layer, t.channel, pool_size)
    labels = pool_labels(split, context, ids)
    response = positive_sums(split.activations, context, ids)  # (n, k)
    maxima = heldout_max_activations(context, t.layer)[ids, t.channel]  # the pool's ranking
    truth = context.planted.get(t.channel)
    images = _images_of(context, split, thumbs)
    owners = images.owners(ids, pool_size)
    shown_original = list(range(min(n_original, ids.numel())))
    per = []
    for i in range(split.k):
        mine = (labels == i).nonzero().flatten()
        order = mine[torch.argsort(-response[mine, i], stable=True)][:per_neuron] if mine.numel() else mine
        per.append(order.tolist())
    images.prepare([int(ids[j]) for j in shown_original + [j for rows in per for j in rows]])
    heldout = context.heldout

    def record(j: int, value: Any) -> dict:
        index = int(ids[j])
        return {"image": index, "thumb": images.names[index], "box": images.boxes[index], "value": round(float(value), 5),
                "class": heldout.classes[int(heldout.labels[index])].name,
                "part": None if owners is None else int(owners[j])}

    neurons: list[dict] = []
    concept_names = _names(context, split.concepts)
    for i, rows in enumerate(per):
        neurons.append({"index": i, "concept": concept_names[i] if concept_names and i < len(concept_names) else None,
                        "share": round(float((labels == i).double().mean()), 4),
                        "references": [record(j, response[j, i]) for j in rows], "images": {}})
    for title, (pixels, neuron_of) in (extra_images or {}).items():
        for img, i in zip(pixels, neuron_of):
            neurons[int(i)]["images"].setdefault(title, []).append(write_thumbnail(thumbs, thumbnail(img)))
    part_names = _names(context, truth.classes) if truth is not None else None
    return {"version": CARD_VERSION, **dict(about or {}), "model": t.model, "layer": t.layer, "channel": t.channel,
            "target": t.key, "method": split.method, "k": split.k, "recomposition": split.recomposition,
            "target_concepts": _names(context, t.concepts), "parts": part_names, "pool": int(ids.numel()),
            "original": [record(j, maxima[j]) for j in shown_original], "neurons": neurons}


def save_card(path: Path, card: dict) -> None:
    atomic_write_text(path, json.dumps(card, indent=1, sort_keys=True))


def load_card(path: Path) -> dict:
    """A card from its JSON file; a file that is not a card of this version is refused by name."""
    from benchmark.core.errors import InputError

    try:
        card = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read the split card {path}: {err}") from None
    if not isinstance(card, dict) or card.get("version") != CARD_VERSION:
        raise InputError(f"{path} is not a split card of version {CARD_VERSION}; rerun `polysemy run` to rewrite it")
    return card


def card_thumbnails(card: dict) -> set[str]:
    """The thumbnail file names a card shows."""
    names = {r["thumb"] for r in card.get("original", [])}
    for neuron in card.get("neurons", []):
        names |= {r["thumb"] for r in neuron["references"]}
        names |= {n for files in neuron["images"].values() for n in files}
    return names


def prune_thumbnails(cards: Path, thumbs: Path) -> int:
    """Delete thumbnails that no card in ``cards`` shows (after stale cards were removed);
    returns how many."""
    if not thumbs.is_dir():
        return 0
    shown: set[str] = set()
    for path in sorted(cards.glob("*.json")) if cards.is_dir() else []:
        shown |= card_thumbnails(load_card(path))
    removed = 0
    for path in thumbs.iterdir():
        if path.is_file() and path.name not in shown:
            path.unlink()
            removed += 1
    return removed
