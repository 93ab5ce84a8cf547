"""Build the shipped stamp mapping tables (a maintainer's tool; users never need to run it).

``python -m benchmark.sources.photos.build_table [--stamps DIR]`` reads the Tux Paint stamps
(``benchmark.sources.photos.setup``) and WordNet 3.0 and rewrites

* ``benchmark/data/stamp_photos.tsv``: one row per stamp PNG outside the drawing folders:
  ``path, status, synset, category, imagenet_wnid, reason, description``;
* ``benchmark/data/stamp_categories.tsv``: the categories (classes of ``stamp_photos``):
  ``index, wnid, synset, name, photos, imagenet`` (ImageNet-1k indices pooled into the class).

Rules (every decision is in the table, ``reason`` says why a stamp was dropped):

1. A stamp is a candidate when it lies under a folder of :data:`FOLDER_CATEGORIES`, is not
   in a ``cartoon``/``toys``/``plastic`` folder, is at least 48 px on its shorter side and
   its opaque pixels hold at least :data:`MIN_COLOURS` distinct colours (6-bit per channel):
   flat drawings have far fewer (measured over all 796 stamps: letters and symbols 1-160,
   photographs mostly 1,000-8,000).
2. Its synset: :data:`OVERRIDES` (reviewed by hand) or the first WordNet noun sense of the
   file name (digits and suffixes stripped), then of the description's words, that is a
   hyponym of one of the folder's categories (folder + file name + description).
3. Its category: the deepest of :data:`CATEGORIES` above the synset. Categories with fewer
   than :data:`MIN_PHOTOS` stamps or without any ImageNet-1k class are dropped.
4. ImageNet-1k class of a stamp: its synset's wnid when that is an ImageNet class (else
   empty). ImageNet classes pooled into a category: those whose deepest kept category it is.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent.parent.parent / "data"
MIN_COLOURS = 300
MIN_SIDE = 48
MIN_PHOTOS = 4
DRAWING_FOLDERS = {"cartoon", "toys", "plastic"}

# category synsets (the classes), reviewed: each names what its photos show; a stamp goes
# to the deepest category above its synset (``mammal`` takes the mammals of no other one)
CATEGORIES = (
    "bird.n.01", "fish.n.01", "insect.n.01", "rodent.n.01", "bovid.n.01", "equine.n.01",
    "feline.n.01", "aquatic_mammal.n.01", "mammal.n.01", "crustacean.n.01", "mollusk.n.01",
    "edible_fruit.n.01", "vegetable.n.01", "flower.n.01", "musical_instrument.n.01",
    "hand_tool.n.01", "clothing.n.01", "tableware.n.01", "wheeled_vehicle.n.01", "ball.n.01",
)
_MAMMALS = ("rodent.n.01", "bovid.n.01", "equine.n.01", "feline.n.01", "aquatic_mammal.n.01", "mammal.n.01")
# folder prefix -> categories a stamp in it may belong to (the longest matching prefix wins)
FOLDER_CATEGORIES = {
    "animals/birds": ("bird.n.01",),
    "animals/fish": ("fish.n.01", "crustacean.n.01"),
    "animals/insects": ("insect.n.01", "crustacean.n.01", "mollusk.n.01"),
    "animals/shellfish": ("mollusk.n.01", "crustacean.n.01"),
    "animals/mammals": _MAMMALS,
    "animals/marsupials": _MAMMALS,
    "food/fruit": ("edible_fruit.n.01",),
    "food/vegetables": ("vegetable.n.01",),
    "plants": ("flower.n.01", "edible_fruit.n.01", "vegetable.n.01"),
    "hobbies/music": ("musical_instrument.n.01",),
    "household/tools": ("hand_tool.n.01",),
    "household/dishes": ("tableware.n.01",),
    "clothes": ("clothing.n.01",),
    "vehicles": ("wheeled_vehicle.n.01",),
    "military/vehicles": ("wheeled_vehicle.n.01",),
    "sports": ("ball.n.01",),
}
# file stem -> synset where the name alone picks a wrong or no sense; "" drops the stamp
# (reviewed by hand against the picture and its description)
OVERRIDES = {
    "clownfish": "anemone_fish.n.01",      # not in WordNet under this name
    "bluegroper": "grouper.n.02",          # "blue" matched a butterfly
    "hoverfly": "fly.n.01",                # a hover fly (not in WordNet), not the honeybee drone
    "otter": "otter.n.02",
    "lark": "lark.n.03",
    "wheel_tractor": "",                   # a tractor wheel, not a vehicle
    "tamarin_emperor": "tamarin.n.01",     # "emperor" matched a butterfly
    "mountaingoat": "mountain_goat.n.01",
    "butterflyfish": "butterfly_fish.n.01",  # the name matched the flying gurnard
    "coraltrout": "grouper.n.02",          # coral trout is a grouper, not a trout
}
_STOP = {"a", "an", "the", "of", "and", "with", "in", "on", "its", "is", "it", "this", "some"}


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z]+", text.lower()) if w not in _STOP]


def candidate_names(stem: str, description: str) -> list[str]:
    """Lookup names in order: whole stem, stem words (last first), description n-grams."""
    clean = re.sub(r"[\d]+", " ", stem.lower()).replace("-", "_").strip("_ ")
    parts = [p for p in re.split(r"[_\s]+", clean) if p]
    names = ["_".join(parts)] if parts else []
    names += ["_".join(parts[i:]) for i in range(1, len(parts))]
    names += list(reversed(parts))
    words = _words(description)
    for n in (3, 2, 1):
        names += ["_".join(words[i:i + n]) for i in range(len(words) - n, -1, -1)]
    seen, out = set(), []
    for n in names:
        if n and n not in seen:
            seen.add(n)
            out.append(n)
    return out


def colour_count(path: Path) -> tuple[int, int]:
    """(distinct 6-bit colours of opaque pixels, shorter side in px)."""
    from PIL import Image

    with Image.open(path) as image:
        rgba = np.asarray(image.convert("RGBA"))
    opaque = rgba[..., :3][rgba[..., 3] > 200] // 4
    colours = len(np.unique(opaque.reshape(-1, 3), axis=0)) if len(opaque) else 0
    return colours, min(rgba.shape[:2])


def description_of(png: Path) -> str:
    txt = png.with_suffix(".txt")
    if not txt.is_file():
        return ""
    first = txt.read_text(encoding="utf-8", errors="replace").splitlines()
    return first[0].strip() if first else ""


def _folder_categories(rel: str) -> tuple[str, ...] | None:
    folder = rel.rsplit("/", 1)[0] if "/" in rel else ""
    best = None
    for prefix in FOLDER_CATEGORIES:
        if folder == prefix or folder.startswith(prefix + "/"):
            if best is None or len(prefix) > len(best):
                best = prefix
    return None if best is None else FOLDER_CATEGORIES[best]


def _ancestors(synset) -> set:
    return set(synset.closure(lambda s: s.hypernyms() + s.instance_hypernyms())) | {synset}


def _deepest(synset, categories: dict) -> str | None:
    above = [c for name, c in categories.items() if c in _ancestors(synset)]
    return max(above, key=lambda c: c.max_depth()).name() if above else None


def classify(rel: str, description: str, wn, categories: dict) -> tuple[str, str, str]:
    """(synset name, category name, reason) of one stamp; empty names when dropped."""
    allowed = _folder_categories(rel)
    if allowed is None:
        return "", "", "folder outside the photo categories"
    stem = Path(rel).stem
    allowed_syn = {categories[c] for c in allowed}
    if stem in OVERRIDES:
        if not OVERRIDES[stem]:
            return "", "", "dropped by review (see OVERRIDES)"
        synset = wn.synset(OVERRIDES[stem])
        return synset.name(), _deepest(synset, categories) or "", "override"
    for name in candidate_names(stem, description):
        for synset in wn.synsets(name, pos="n"):
            if _ancestors(synset) & allowed_syn:
                return synset.name(), _deepest(synset, {c.name(): c for c in allowed_syn}), f"name '{name}'"
    return "", "", "no noun sense of the name or description under the folder's categories"


def build(stamps: Path) -> tuple[list[dict], list[dict]]:
    from benchmark.sources.wordnet import wnid_of, wordnet
    from benchmark.sources.zoo.imagenet import imagenet_classes

    wn = wordnet()
    categories = {name: wn.synset(name) for name in CATEGORIES}
    rows = []
    for png in sorted(stamps.rglob("*.png")):
        rel = png.relative_to(stamps).as_posix()
        if DRAWING_FOLDERS & set(rel.split("/")[:-1]) or rel.startswith("symbols/"):
            continue
        description = description_of(png)
        row = dict(path=rel, status="dropped", synset="", category="", imagenet_wnid="", reason="",
                   description=description.replace("\t", " "))
        if _folder_categories(rel) is None:
            continue  # not listed at all: only stamps of photo folders are in the table
        colours, side = colour_count(png)
        if side < MIN_SIDE or colours < MIN_COLOURS:
            row["reason"] = f"drawing or too small ({colours} colours, {side} px)"
            rows.append(row)
            continue
        synset, category, reason = classify(rel, description, wn, categories)
        row.update(synset=synset, category=category, reason=reason)
        if synset:
            row["status"] = "mapped"
            row["imagenet_wnid"] = next((c.wnid for c in imagenet_classes() if c.synset == synset), "")
        rows.append(row)
    counts = {}
    for r in rows:
        if r["status"] == "mapped":
            counts[r["category"]] = counts.get(r["category"], 0) + 1
    # ImageNet classes -> deepest category among those with enough photos
    kept = {n: categories[n] for n in CATEGORIES if counts.get(n, 0) >= MIN_PHOTOS}
    members: dict[str, list[int]] = {n: [] for n in kept}
    for c in imagenet_classes():
        home = _deepest(wn.synset(c.synset), kept)
        if home is not None:
            members[home].append(c.index)
    kept = {n: s for n, s in kept.items() if members[n]}
    for r in rows:
        if r["status"] == "mapped" and r["category"] not in kept:
            r["status"] = "dropped"
            r["reason"] = (f"category {r['category']} has {counts.get(r['category'], 0)} photos (< {MIN_PHOTOS}) "
                           "or no ImageNet class")
    table = [dict(index=i, wnid=wnid_of(s), synset=n, name=n.split(".")[0].replace("_", " "),
                  photos=counts[n], imagenet=",".join(map(str, members[n])))
             for i, (n, s) in enumerate(sorted(kept.items()))]
    return rows, table


def write_tsv(path: Path, rows: list[dict]) -> None:
    from benchmark.storage.cache import atomic_write_text

    header = list(rows[0])
    lines = ["\t".join(header)] + ["\t".join(str(r[h]) for h in header) for r in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    from benchmark.sources.photos.setup import locate_stamps

    parser = argparse.ArgumentParser(prog="python -m benchmark.sources.photos.build_table", description=__doc__.splitlines()[0])
    parser.add_argument("--stamps", type=Path, default=None, help="stamps folder (default: the provisioned one)")
    args = parser.parse_args(argv)
    stamps = args.stamps or locate_stamps(required=True)
    rows, table = build(stamps)
    write_tsv(DATA / "stamp_photos.tsv", rows)
    write_tsv(DATA / "stamp_categories.tsv", table)
    mapped = sum(r["status"] == "mapped" for r in rows)
    print(f"{len(rows)} candidate stamps: {mapped} mapped, {len(rows) - mapped} dropped; {len(table)} categories")
    for t in table:
        print(f"  {t['synset']:<26} {t['photos']:>3} photos, {len(t['imagenet'].split(','))} ImageNet classes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
