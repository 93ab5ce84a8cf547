"""The judge network: an independent model of the synthetic world's generating factors.

A plain VGG-style network (3x3 convs, batch norm, max-pooling, no residuals: a different
architecture from the world CNN, trained from a different seed) with one classification
head per discrete factor: shape (4), texture (4) and colour bin (8). Its penultimate
128-d embedding is what the ``judge`` embedder returns: in the offline world it stands in
for CLIP in PURE's embedding-distance evaluation (Dreyer et al. 2024), and it is
trained on the factors, not the classes, so it does not inherit the world CNN's features.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from torch import Tensor, nn

from benchmark.sources.world.classes import COLOURS, SHAPES, TEXTURES
from benchmark.sources.world.dataset import SyntheticWorld, config_digest
from benchmark.sources.world.generator import WorldConfig
from benchmark.sources.world.training import TrainConfig, fit, load_or_train, predict, seeded

JUDGE_FACTORS: dict[str, int] = {"shape": len(SHAPES), "texture": len(TEXTURES), "colour": len(COLOURS)}
JUDGE_SEED = 1001
JUDGE_TRAIN = TrainConfig(epochs=4)
EMBED_DIM = 128
JUDGE_VERSION = 1


def _conv(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class JudgeNet(nn.Module):
    """conv32-pool-conv64-pool-conv128-pool-conv128-avgpool-fc128 trunk, one linear head per factor."""

    def __init__(self, factors: dict[str, int] = JUDGE_FACTORS, embed_dim: int = EMBED_DIM):
        super().__init__()
        self.features = nn.Sequential(
            *_conv(3, 32), nn.MaxPool2d(2), *_conv(32, 64), nn.MaxPool2d(2), *_conv(64, 128), nn.MaxPool2d(2),
            *_conv(128, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, embed_dim), nn.ReLU(),
        )
        self.heads = nn.ModuleDict({k: nn.Linear(embed_dim, n) for k, n in factors.items()})

    def embed(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) world-normalised images -> (N, embed_dim) penultimate features."""
        return self.features(x)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        e = self.embed(x)
        return {k: head(e) for k, head in self.heads.items()}


def _outputs(model: nn.Module, x: Tensor) -> dict[str, Tensor]:
    return model(x)


def judge_accuracies(judge: JudgeNet, dataset: SyntheticWorld) -> dict[str, float]:
    """Accuracy of each factor head on a synthetic-world dataset, e.g. ``{"shape": 0.99, ...}``."""
    preds = predict(judge, dataset.images_u8, _outputs)
    return {k: float((preds[k] == dataset.factors[k]).float().mean()) for k in JUDGE_FACTORS}


def judge_spec(seed: int = JUDGE_SEED, world_seed: int = 0, config: WorldConfig = WorldConfig(),
               train: TrainConfig = JUDGE_TRAIN, train_size: int = 20_000) -> dict:
    """Everything that determines the judge's weights (the cache key)."""
    return {"model": "judge", "version": JUDGE_VERSION, "factors": JUDGE_FACTORS, "embed_dim": EMBED_DIM,
            "seed": seed, "world_seed": world_seed, "world": config_digest(config), "train": asdict(train),
            "train_size": train_size}


def train_judge(seed: int = JUDGE_SEED, world_seed: int = 0, config: WorldConfig = WorldConfig(),
                train: TrainConfig = JUDGE_TRAIN, train_size: int = 20_000,
                val_size: int = 4_000, progress: bool = True) -> tuple[JudgeNet, dict]:
    """Train the judge from scratch: (eval-mode judge, info with validation accuracies)."""
    data = SyntheticWorld("train", size=train_size, seed=world_seed, config=config)
    with seeded(seed):
        model = JudgeNet()
    targets = {k: data.factors[k] for k in JUDGE_FACTORS}
    start = time.perf_counter()
    fit(model, data.images_u8, targets, _outputs, train, seed, desc="judge", progress=progress)
    seconds = time.perf_counter() - start
    val = SyntheticWorld("val", size=val_size, seed=world_seed, config=config)
    accs = judge_accuracies(model, val)
    return model, {**{f"val_{k}_accuracy": v for k, v in accs.items()}, "train_seconds": round(seconds, 1)}


def load_judge(weights: str | Path | None = None, seed: int = JUDGE_SEED, world_seed: int = 0,
               config: WorldConfig = WorldConfig(), train: TrainConfig = JUDGE_TRAIN,
               train_size: int = 20_000, val_size: int = 4_000, progress: bool = True) -> JudgeNet:
    """The trained judge in eval mode: from ``weights`` if given, else cached or trained."""
    spec = judge_spec(seed, world_seed, config, train, train_size)
    return load_or_train("judge", JudgeNet(), spec, weights,
                         lambda: train_judge(seed, world_seed, config, train, train_size, val_size, progress))
