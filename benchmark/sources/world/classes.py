"""The class table of the synthetic world: 16 WordNet 3.0 noun synsets in 4 hypernym groups.

Every class is drawn as one *shape* and one *texture* (plus nuisance factors: colour,
position, scale, rotation, background, noise). The shape is shared by the four classes of
a WordNet group (beagle, golden retriever, dalmatian and pug are all crosses), the texture
is shared by four WordNet-UNRELATED classes, one per group (beagle, Granny Smith, sports car
and alp are all striped). A channel that detects a texture therefore fires for classes
that WordNet calls unrelated: the natural source of polysemantic channels in this world.

The wnids are the ImageNet-1k ids of these synsets (WordNet 3.0 noun offsets), so a class
here and the ImageNet class of the same name are the same synset. ``tests/sources/test_world.py``
checks every entry against WordNet itself. Wu-Palmer similarity is >= 0.67 for every pair
inside a group and <= 0.40 for every pair across groups (a stringed-instrument group was
rejected: cars vs instruments reach 0.55, above the detection track's 0.5 threshold).
"""
from __future__ import annotations

from dataclasses import dataclass

from benchmark.sources.datasets import ClassInfo

SHAPES: tuple[str, ...] = ("cross", "disk", "square", "triangle")
TEXTURES: tuple[str, ...] = ("stripes", "checker", "dots", "rings")
COLOURS: tuple[str, ...] = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "magenta")


@dataclass(frozen=True)
class Group:
    """A WordNet hypernym group: its synset and the shape all its classes share."""

    index: int
    name: str
    wnid: str
    synset: str
    shape: int


@dataclass(frozen=True)
class WorldClass:
    """One class: WordNet identity (:class:`ClassInfo`), group and visual primitives."""

    info: ClassInfo
    group: int
    shape: int
    texture: int

    @property
    def shape_name(self) -> str:
        return SHAPES[self.shape]

    @property
    def texture_name(self) -> str:
        return TEXTURES[self.texture]


GROUPS: tuple[Group, ...] = (
    Group(0, "dog", "n02084071", "dog.n.01", shape=0),
    Group(1, "edible fruit", "n07705931", "edible_fruit.n.01", shape=1),
    Group(2, "car", "n02958343", "car.n.01", shape=2),
    Group(3, "geological formation", "n09287968", "geological_formation.n.01", shape=3),
)

# (wnid, nltk synset name, readable name), four per group, in group order; the position
# inside the group is the texture index.
_TABLE: tuple[tuple[str, str, str], ...] = (
    ("n02088364", "beagle.n.01", "beagle"),
    ("n02099601", "golden_retriever.n.01", "golden retriever"),
    ("n02110341", "dalmatian.n.02", "dalmatian"),
    ("n02110958", "pug.n.01", "pug"),
    ("n07742313", "granny_smith.n.01", "Granny Smith"),
    ("n07745940", "strawberry.n.01", "strawberry"),
    ("n07747607", "orange.n.01", "orange"),
    ("n07749582", "lemon.n.01", "lemon"),
    ("n04285008", "sports_car.n.01", "sports car"),
    ("n03100240", "convertible.n.01", "convertible"),
    ("n03594945", "jeep.n.01", "jeep"),
    ("n02701002", "ambulance.n.01", "ambulance"),
    ("n09193705", "alp.n.01", "alp"),
    ("n09472597", "volcano.n.02", "volcano"),
    ("n09399592", "promontory.n.01", "promontory"),
    ("n09246464", "cliff.n.01", "cliff"),
)

PER_GROUP = len(TEXTURES)

WORLD_CLASSES: tuple[WorldClass, ...] = tuple(
    WorldClass(
        info=ClassInfo(index=i, wnid=wnid, synset=synset, name=name),
        group=i // PER_GROUP,
        shape=GROUPS[i // PER_GROUP].shape,
        texture=i % PER_GROUP,
    )
    for i, (wnid, synset, name) in enumerate(_TABLE)
)

CLASS_INFOS: tuple[ClassInfo, ...] = tuple(c.info for c in WORLD_CLASSES)
NUM_CLASSES = len(WORLD_CLASSES)


def class_of(shape: int, texture: int) -> int:
    """The class index drawn as ``(shape, texture)``."""
    for c in WORLD_CLASSES:
        if c.shape == shape and c.texture == texture:
            return c.info.index
    raise ValueError(f"no class has shape {shape} and texture {texture}: shapes 0..{len(SHAPES) - 1}, "
                     f"textures 0..{len(TEXTURES) - 1}")


def classes_sharing(primitive: str, value: int) -> tuple[int, ...]:
    """Indices of the classes whose ``primitive`` ("shape", "texture" or "group") is ``value``."""
    if primitive not in ("shape", "texture", "group"):
        raise ValueError(f"primitive must be 'shape', 'texture' or 'group', got {primitive!r}")
    return tuple(c.info.index for c in WORLD_CLASSES if getattr(c, primitive) == value)


def unrelated_pairs_sharing_texture() -> tuple[tuple[int, int], ...]:
    """Every pair of classes from different WordNet groups that share a texture (24 pairs)."""
    out = []
    for a in WORLD_CLASSES:
        for b in WORLD_CLASSES:
            if a.info.index < b.info.index and a.texture == b.texture and a.group != b.group:
                out.append((a.info.index, b.info.index))
    return tuple(out)
