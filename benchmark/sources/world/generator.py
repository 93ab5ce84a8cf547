"""Procedural image generator of the synthetic world (vectorised, counter-based random).

An image is a function of ``(config, seed, split, index)`` only: every random number is a
hash of that tuple and a stream number (a counter-based generator, in the spirit of
Philox/"random123"), so an image does not depend on which other images are generated with
it, and batches of any size are rendered at once with tensor operations.

Rendering: an anti-aliased shape (cross, disk, square, triangle) in local coordinates that
are rotated, scaled and translated; a texture (stripes, checker, dots, rings) drawn in the
same local coordinates (so it turns with the shape) mixing the object colour with a dark
shade of it; a grey, slightly tinted background with a linear gradient; additive noise.
The class fixes shape and texture (``benchmark.sources.world.classes``); the label is
``index % num_classes`` so every split is balanced.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from benchmark.sources.world.classes import COLOURS, NUM_CLASSES, SHAPES, TEXTURES, WORLD_CLASSES

GENERATOR_VERSION = 1
SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}
_MASK32 = 0xFFFFFFFF


@dataclass(frozen=True)
class WorldConfig:
    """Rendering parameters. Lengths are in units of half the image side."""

    image_size: int = 32
    scale_range: tuple[float, float] = (0.42, 0.62)  # object radius
    max_offset: float = 0.3  # |x|, |y| of the object centre
    texture_period: float = 0.55  # in object-local units (object radius = 1)
    hue_jitter: float = 0.3  # fraction of a colour bin
    background_range: tuple[float, float] = (0.3, 0.62)
    noise_std: float = 0.04

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise ValueError(f"image_size must be >= 16 pixels, got {self.image_size}")
        lo, hi = self.scale_range
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"scale_range must satisfy 0 < lo <= hi <= 1, got {self.scale_range}")
        if not 0 <= self.max_offset < 1:
            raise ValueError(f"max_offset must be in [0, 1), got {self.max_offset}")
        if self.noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")


def hash32(x: Tensor) -> Tensor:
    """A 32-bit integer mixing function applied elementwise to int64 values in [0, 2^32).

    Two multiply-xorshift rounds (constants below 2^31 so int64 products cannot overflow).
    """
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & _MASK32
    return x ^ (x >> 15)


def _base_key(seed: int, split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: allowed {sorted(SPLITS)}")
    if not 0 <= int(seed) < 2**31:
        raise ValueError(f"seed must be in [0, 2^31), got {seed}")
    k = hash32(torch.tensor([int(seed) * 0x9E3779B1 + 0x85EBCA6B], dtype=torch.long))
    return int(hash32(k ^ (SPLITS[split] + 1) * 0x27D4EB2F))


class _Streams:
    """Uniform [0, 1) numbers: one stream per named quantity, one value per image."""

    def __init__(self, keys: Tensor):
        self.keys = keys  # (N,) int64 per-image keys
        self.counter = 0

    def next_bits(self) -> Tensor:
        self.counter += 1
        return hash32(self.keys ^ int(hash32(torch.tensor(self.counter * 0x61C88647))))

    def uniform(self, lo: float = 0.0, hi: float = 1.0) -> Tensor:
        return lo + (hi - lo) * self.next_bits().double().div(2.0**32).float()


def _hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """(N,) hue in [0,1), saturation, value -> (N, 3) RGB in [0, 1]."""
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], dim=1)
    f = torch.clamp(torch.minimum(k, 4 - k), 0, 1)
    return v[:, None] * (1 - s[:, None] * f)


def _shape_sdf(shape: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """Signed distance (object-local units, < 0 inside) of each image's shape. (N, H, W)."""
    au, av = u.abs(), v.abs()
    cross = torch.minimum(torch.maximum(au - 1.0, av - 0.36), torch.maximum(av - 1.0, au - 0.36))
    disk = torch.sqrt(u * u + v * v) - 0.9
    square = torch.maximum(au, av) - 0.78
    s3 = math.sqrt(3) / 2  # equilateral triangle, inradius 0.55, pointing up
    tri = torch.maximum(torch.maximum(-v, s3 * u + 0.5 * v), -s3 * u + 0.5 * v) - 0.55
    out = torch.stack([cross, disk, square, tri], dim=0)  # order of SHAPES
    return out.gather(0, shape.view(1, -1, 1, 1).expand(1, *u.shape)).squeeze(0)


def _texture(texture: Tensor, u: Tensor, v: Tensor, period: float, sharp: Tensor) -> Tensor:
    """Pattern value in [0, 1] (1 = object colour, 0 = dark shade). (N, H, W)."""
    w = 2 * math.pi / period
    stripes = torch.sin(w * u)
    checker = torch.sin(w * u) * torch.sin(w * v) * 2.0
    du = torch.remainder(u / period, 1.0) - 0.5
    dv = torch.remainder(v / period, 1.0) - 0.5
    dots = (torch.sqrt(du * du + dv * dv) - 0.3) * 2 * math.pi
    rings = -torch.cos(w * torch.sqrt(u * u + v * v))  # dark centre, light near the outline
    out = torch.stack([stripes, checker, dots, rings], dim=0)  # order of TEXTURES
    raw = out.gather(0, texture.view(1, -1, 1, 1).expand(1, *u.shape)).squeeze(0)
    return torch.clamp(0.5 + raw * sharp[:, None, None], 0.0, 1.0)


def sample_factors(indices: Tensor, seed: int, split: str, config: WorldConfig) -> dict[str, Tensor]:
    """The generating factors of the images at ``indices`` (dict of (N,) tensors)."""
    indices = torch.as_tensor(indices, dtype=torch.long).flatten()
    if indices.numel() and int(indices.min()) < 0:
        raise ValueError("image indices must be >= 0")
    base = _base_key(seed, split)
    keys = hash32(indices * 0x9E3779B1 ^ base)
    rng = _Streams(keys)
    label = indices % NUM_CLASSES
    table = torch.tensor([[c.shape, c.texture] for c in WORLD_CLASSES], dtype=torch.long)
    n_col = len(COLOURS)
    colour = (rng.uniform() * n_col).long().clamp_max(n_col - 1)
    hue = torch.remainder((colour.float() + 0.5 + config.hue_jitter * rng.uniform(-1, 1)) / n_col, 1.0)
    lim = config.max_offset
    return {
        "label": label,
        "group": label // len(TEXTURES),
        "shape": table[label, 0],
        "texture": table[label, 1],
        "colour": colour,
        "hue": hue,
        "saturation": rng.uniform(0.65, 1.0),
        "value": rng.uniform(0.8, 1.0),
        "x": rng.uniform(-lim, lim),
        "y": rng.uniform(-lim, lim),
        "scale": rng.uniform(*config.scale_range),
        "rotation": rng.uniform(0.0, 2 * math.pi),
        "background": rng.uniform(*config.background_range),
        "gradient": rng.uniform(-0.12, 0.12),
        "gradient_angle": rng.uniform(0.0, 2 * math.pi),
        "tint_r": rng.uniform(-0.06, 0.06),
        "tint_b": rng.uniform(-0.06, 0.06),
        "key": keys,
    }


def _grid(s: int) -> tuple[Tensor, Tensor]:
    coords = (torch.arange(s, dtype=torch.float32) + 0.5) / s * 2 - 1
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")  # y grows downwards
    return gx, gy


def _local_coords(factors: dict[str, Tensor], s: int) -> tuple[Tensor, Tensor]:
    """Object-local coordinates (u, v) of every pixel: (N, S, S) each; the object has radius 1."""
    gx, gy = _grid(s)
    dx = gx[None] - factors["x"][:, None, None]
    dy = -(gy[None] - factors["y"][:, None, None])  # y up in object space
    cos, sin = torch.cos(factors["rotation"])[:, None, None], torch.sin(factors["rotation"])[:, None, None]
    r = factors["scale"][:, None, None]
    return (cos * dx + sin * dy) / r, (-sin * dx + cos * dy) / r


def object_mask(factors: dict[str, Tensor], config: WorldConfig) -> Tensor:
    """Anti-aliased coverage in [0, 1] of the object in every pixel: (N, S, S) float."""
    s = config.image_size
    u, v = _local_coords(factors, s)
    px_per_unit = factors["scale"][:, None, None] * s / 2  # object-local unit -> pixels
    return torch.clamp(0.5 - _shape_sdf(factors["shape"], u, v) * px_per_unit, 0.0, 1.0)


def render(factors: dict[str, Tensor], config: WorldConfig) -> Tensor:
    """Draw images from factors: (N, 3, S, S) uint8. Noise is hashed from ``factors['key']``."""
    n, s = factors["label"].numel(), config.image_size
    gx, gy = _grid(s)
    u, v = _local_coords(factors, s)
    alpha = object_mask(factors, config)
    sharp = 0.5 * factors["scale"] * s / 2 * config.texture_period / 2  # ~1 pixel transitions
    pattern = _texture(factors["texture"], u, v, config.texture_period, sharp)

    rgb = _hsv_to_rgb(factors["hue"], factors["saturation"], factors["value"])  # (N, 3)
    fg = rgb[:, :, None, None] * (0.25 + 0.75 * pattern[:, None])  # dark shade where pattern = 0
    ga = factors["gradient_angle"][:, None, None]
    bg_level = factors["background"][:, None, None] + factors["gradient"][:, None, None] * (
        torch.cos(ga) * gx[None] + torch.sin(ga) * gy[None])
    tint = torch.stack([factors["tint_r"], torch.zeros(n), factors["tint_b"]], dim=1)
    bg = bg_level[:, None] + tint[:, :, None, None]
    img = bg * (1 - alpha[:, None]) + fg * alpha[:, None]

    if config.noise_std > 0:
        j = hash32(torch.arange(3 * s * s, dtype=torch.long) * 0x632BE5AB + 0x5BD1E995)
        bits = hash32(factors["key"][:, None] ^ j[None, :])
        tri = ((bits & 0xFFFF).float() + (bits >> 16).float()) / 65536.0 - 1.0  # triangular, var 1/6
        img = img + (config.noise_std * math.sqrt(6.0)) * tri.view(n, 3, s, s)
    return torch.clamp(img * 255.0 + 0.5, 0, 255).to(torch.uint8)


def generate(
    indices: Tensor | range | list[int], seed: int = 0, split: str = "train",
    config: WorldConfig = WorldConfig(), batch_size: int = 256,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Images (N, 3, S, S) uint8 and factors of the given indices, rendered in batches
    (batches of about 256 images keep the working set in the CPU cache: fastest)."""
    idx = torch.as_tensor(list(indices) if isinstance(indices, range) else indices, dtype=torch.long).flatten()
    factors = sample_factors(idx, seed, split, config)
    chunks = []
    for start in range(0, idx.numel(), batch_size):
        part = {k: v[start:start + batch_size] for k, v in factors.items()}
        chunks.append(render(part, config))
    s = config.image_size
    images = torch.cat(chunks) if chunks else torch.empty(0, 3, s, s, dtype=torch.uint8)
    return images, factors


FACTOR_NAMES = ("label", "group", "shape", "texture", "colour", "hue", "saturation", "value", "x", "y",
                "scale", "rotation", "background", "gradient", "gradient_angle", "tint_r", "tint_b", "key")
DISCRETE_FACTORS: dict[str, int] = {
    "label": NUM_CLASSES, "shape": len(SHAPES), "texture": len(TEXTURES), "colour": len(COLOURS),
}
