"""The ``judge`` embedder: the synthetic world's judge network as an image embedder.

Offline stand-in for CLIP in PURE's embedding-distance evaluation (Dreyer et al. 2024):
the penultimate features of a network trained to predict the world's generating factors
(``benchmark.sources.world.judge``). Like every embedder it takes RGB images in [0, 1] (a
dataset's ``to_unit_range`` of what it yields) and maps them to the world's input space
itself; other sizes (receptive-field crops) are resized to the world's 32x32 (bilinear).

``judge_factors`` is the factor-aware variant: the embedding is the concatenated softmax
probabilities of the judge's heads for the CLASS-RELEVANT factors only (shape and texture:
in the synthetic world a class is one shape and one texture; colour, position, scale and
background are nuisances). Two images of one class drawn in different colours embed alike,
so a colour split of one class no longer scores as a concept split.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmark.core.plugins import Embedder
from benchmark.core.registry import EMBEDDERS
from benchmark.sources.embedders import check_unit_rgb


def to_input_range(unit_nchw: Tensor) -> Tensor:
    """[0, 1] RGB -> the world's input space (``benchmark.sources.world.dataset.MEAN``/``STD`` = 0.5)."""
    return unit_nchw * 2.0 - 1.0


@functools.lru_cache(maxsize=4)
def _judge_model(weights: str | None, seed: int, world_seed: int):
    from benchmark.core.progress import enabled
    from benchmark.sources.world.judge import load_judge

    return load_judge(weights=weights, seed=seed, world_seed=world_seed, progress=enabled())


@EMBEDDERS.register("judge")
@dataclass(frozen=True)
class JudgeEmbedder(Embedder):
    """Penultimate 128-d features of the synthetic world's factor-predicting judge network.

    ``weights``: a local weights file, or None for the cached/trained judge of
    (``seed``, ``world_seed``). ``image_size``: inputs of another size are resized to it.
    """

    datasets: ClassVar[tuple[str, ...]] = ("synthetic_world",)  # trained on these images only
    weights: str | None = None
    seed: int = 1001
    world_seed: int = 0
    image_size: int = 32
    batch_size: int = 512
    factors: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        src = self.weights if self.weights is not None else f"seed{self.seed}-world{self.world_seed}"
        return f"judge({src}{',' + '+'.join(self.factors) if self.factors else ''})"

    prepares_weights: ClassVar[bool] = True  # the judge is trained on first use (then cached)

    def prepare(self) -> None:
        """Load the judge, training and caching it if no cache entry holds it yet."""
        _judge_model(self.weights, self.seed, self.world_seed)

    @torch.no_grad()
    def embed(self, images_nchw: Tensor) -> Tensor:
        """(N, 3, H, W) RGB images in [0, 1] -> (N, 128) float embeddings on the CPU."""
        check_unit_rgb(images_nchw)
        model = _judge_model(self.weights, self.seed, self.world_seed)
        x = to_input_range(images_nchw.detach().float().cpu().clamp(0.0, 1.0))
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        unknown = [f for f in self.factors if f not in model.heads]
        if unknown:
            raise ValueError(f"unknown judge factor(s) {unknown}; the judge predicts {sorted(model.heads)}")
        out = [self._features(model, x[i:i + self.batch_size]) for i in range(0, x.shape[0], self.batch_size)]
        width = sum(model.heads[f].out_features for f in self.factors) if self.factors else model.heads["shape"].in_features
        return torch.cat(out) if out else torch.empty(0, width)

    def _features(self, model, x: Tensor) -> Tensor:
        emb = model.embed(x)
        if not self.factors:
            return emb
        return torch.cat([model.heads[f](emb).softmax(dim=1) for f in self.factors], dim=1)


@EMBEDDERS.register("judge_factors")
@dataclass(frozen=True)
class JudgeFactorEmbedder(JudgeEmbedder):
    """The judge's shape and texture probabilities (the synthetic world's class-relevant factors)."""

    factors: tuple[str, ...] = ("shape", "texture")
