"""Pieces shared by the feature-visualisation backends: the :class:`Rendering` result,
seeding, scoring and one gradient-ascent step.

Contract of every backend (registered in ``benchmark.core.registry.FEATURE_VIS``)::

    backend.render(objective, num, normalize) -> Rendering

``objective(images_nchw) -> (num,)`` scores image i for objective i (see
``benchmark.engine.fvis._objectives``); ``normalize`` maps [0, 1] RGB images to the model's input
space.  Gradients are taken with ``torch.autograd.grad`` w.r.t. the image parameters
only, so the model's ``.grad`` fields are never touched.
"""
from __future__ import annotations

import random
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

Normalize = Callable[[Tensor], Tensor]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Rendering:
    """Feature visualisations and the objective before and after optimisation.

    ``images`` (num, 3, H, W) in [0, 1] on the CPU; ``start_scores`` / ``end_scores``
    (num,) are the objective on the un-augmented starting / final images.
    """

    images: Tensor
    start_scores: Tensor
    end_scores: Tensor

    @property
    def gain(self) -> Tensor:
        """(num,) end - start: how much more the visualisation drives its objective."""
        return self.end_scores - self.start_scores


def mean_std_normalize(mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Normalize:
    """A ``normalize`` callable: (x - mean) / std per colour channel (ImageNet by default)."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    if (s <= 0).any():
        raise ValueError(f"std must be positive, got {tuple(std)}")

    def normalize(images: Tensor) -> Tensor:
        return (images - m.to(images.device)) / s.to(images.device)

    return normalize


def identity(images: Tensor) -> Tensor:
    """``normalize`` for models that take [0, 1] images as they are."""
    return images


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch (CPU), numpy and ``random`` inside the block; restore their states after
    (lucent's parameterisation and transforms draw from these global generators)."""
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def check_args(num: int, image_size: int, steps: int, lr: float) -> None:
    """Validate the common hyperparameters and the batch size."""
    if not isinstance(num, int) or num < 1:
        raise ValueError(f"num must be a positive int (number of images to render), got {num!r}")
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8 pixels, got {image_size}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if lr <= 0:
        raise ValueError(f"lr must be positive, got {lr}")


def resize(images: Tensor, size: int) -> Tensor:
    """Bilinear resize to size x size (no-op when already that size)."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def evaluate(objective: Callable[[Tensor], Tensor], images: Tensor, num: int) -> Tensor:
    """Call ``objective`` and check it returned one score per image."""
    scores = objective(images)
    if not isinstance(scores, Tensor) or scores.shape != (num,):
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"objective must return a tensor of shape ({num},) (one score per image), got {shape}")
    return scores


@torch.no_grad()
def score(objective: Callable[[Tensor], Tensor], normalize: Normalize, images: Tensor,
          input_size: int, device: torch.device) -> Tensor:
    """Objective of un-augmented [0, 1] images resized to the model's input size."""
    x = normalize(resize(images, input_size).to(device))
    return evaluate(objective, x, images.shape[0]).detach().float().cpu()


def ascend(params: list[Tensor], optimizer: torch.optim.Optimizer, objective_sum: Tensor) -> None:
    """One gradient-ascent step on ``objective_sum`` w.r.t. ``params`` only."""
    grads = torch.autograd.grad(-objective_sum, params, allow_unused=True)
    for p, g in zip(params, grads):
        p.grad = torch.zeros_like(p) if g is None else g
    optimizer.step()
