"""The random baseline: k virtual neurons by random hard gating, references split at random.

Gate of an image = SHA-256(seed, image tensor bytes as float32) mod k, so the same image
with the same seed always gets the same virtual neuron, on any device and in any batch, and
images spread about uniformly over the k neurons. Reference samples (the channel's top
``n_ref`` by max activation) are permuted with a generator seeded by (seed, channel) and
dealt into k groups of near-equal size.

It calibrates chance: a method whose separation scores do not beat ``random_split`` has
found no structure; its recomposition is exact (gating) like every gating method.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from benchmark.core.plugins import Method
from benchmark.core.registry import METHODS
from benchmark.core.types import Context, Split, Target
from methods._gating import gated_split, one_hot_gates
from methods._pooled import reference_ids


def hash_gates(images: Tensor, k: int, seed: int) -> Tensor:
    """(N,) virtual-neuron index of each image: SHA-256 of (seed, float32 bytes) mod k."""
    salt = int(seed).to_bytes(8, "little", signed=True)
    flat = images.detach().to("cpu", torch.float32).contiguous()
    out = [int.from_bytes(hashlib.sha256(salt + img.numpy().tobytes()).digest()[:8], "little") % k
           for img in flat]
    return torch.tensor(out, dtype=torch.long)


@METHODS.register("random_split")
@dataclass(frozen=True)
class RandomSplit(Method):
    """Random hard gating by a seeded hash of the image; references dealt at random (chance level).

    Calibrates: the chance level of every separation metric.
    """

    role: ClassVar[str] = "no_op"

    k: int = 2
    n_ref: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        if self.k < 2:
            raise ValueError(f"random_split needs k >= 2, got k={self.k} (use 'identity' for k=1)")
        if self.n_ref < self.k:
            raise ValueError(f"n_ref={self.n_ref} must be >= k={self.k} so every group gets a reference")

    def fit(self, context: Context, target: Target) -> Split:
        ids = reference_ids(context, target, self.n_ref, by="max")
        g = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + int(target.channel))
        perm = torch.randperm(ids.numel(), generator=g)
        groups = [ids[perm[i::self.k].sort().values].tolist() for i in range(self.k)]
        k, seed = self.k, self.seed

        def gates(images: Tensor) -> Tensor:
            return one_hot_gates(hash_gates(images, k, seed), k).to(images.device)

        return gated_split(target=target, method="random_split", model=context.model, gates_fn=gates,
                           k=k, reference_ids=groups, info={"seed": seed}, memo=context.memo)
