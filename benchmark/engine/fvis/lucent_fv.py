"""Lucid-style feature visualisation with torch-lucent's pieces (Olah et al., "Feature
Visualization", Distill 2017; lucent 0.1.8 is the PyTorch port of Lucid).

Image parameterisation: ``lucent.optvis.param.image(size, batch=num, fft=True,
decorrelate=True)`` (a 1/f-scaled Fourier spectrum, decorrelated colours, sigmoid to
[0, 1]).  Augmentations: lucent's standard transforms (constant pad, jitter, random scale,
random rotation, jitter) with pad/jitter sizes scaled by ``image_size / 224`` so that the
same recipe works on 32 px synthetic images and 224 px ImageNet.  Optimiser: Adam, as in
``lucent.optvis.render.render_vis``.

Our own loop replaces ``render_vis`` because its hook-based objectives do not accept a
plain ``images -> (num,)`` function; the transformed image is resized back to the model's
input size (``render_vis`` instead upsamples small images to 224 px).  Checked with
torch 2.15 / kornia 0.4.1: the parameterisation and every transform run on the CPU.
Lucent places its tensors on ``cuda:0`` whenever CUDA is available; images are moved to
``device`` before the objective, so a CPU model still works there.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from benchmark.core.registry import FEATURE_VIS
from benchmark.core.threads import single_threaded
from benchmark.engine.fvis._common import Normalize, Rendering, ascend, check_args, evaluate, resize, score, seeded


def _lucent():
    """Import lucent lazily (kornia 0.4.1 warns about torch.jit.script on import)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            from lucent.optvis import param, transform
        except ImportError as err:  # pragma: no cover - dependency of the project
            raise ImportError("the 'lucent' backend needs torch-lucent: pip install torch-lucent") from err
    return param, transform


@FEATURE_VIS.register("lucent")
@dataclass(frozen=True)
class LucentFV:
    """Lucid/lucent feature visualisation (Olah et al. 2017): Fourier image, Adam.

    Decorrelated colours, lucent's standard transforms scaled to the image size.

    Attributes:
        steps: optimisation steps.
        image_size: side of the rendered square image.
        input_size: side the model sees (None: ``image_size``).
        lr: Adam learning rate (lucent's default 0.05).
        seed: seed of the initial spectrum and of the random transforms.
        sd: standard deviation of the initial spectrum (lucent's default 0.01).
        fft, decorrelate: lucent's parameterisation switches.
        transforms: apply the (scaled) standard transforms; None = only from 64 px on. They
            were designed for 224 px images; on 32 px images (the synthetic world) they
            dominate the image and measurably stop some virtual neurons' objectives from
            rising (tests/engine/test_fvis_world.py), so small renderings go without them.
        transform_scale: pad/jitter scale; None: ``image_size / 224``.
        device: where the objective runs.
    """

    steps: int = 128
    image_size: int = 32
    input_size: int | None = None
    lr: float = 0.05
    seed: int = 0
    sd: float = 0.01
    fft: bool = True
    decorrelate: bool = True
    transforms: bool | None = None
    transform_scale: float | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        check_args(1, self.image_size, self.steps, self.lr)
        if self.transform_scale is not None and self.transform_scale <= 0:
            raise ValueError(f"transform_scale must be positive or None, got {self.transform_scale}")

    def _transform(self, transform) -> Callable[[Tensor], Tensor]:
        """Lucent's ``standard_transforms`` with pad/jitter in pixels scaled to the image."""
        enabled = self.transforms if self.transforms is not None else self.image_size >= 64
        if not enabled:
            return lambda x: x
        s = self.transform_scale if self.transform_scale is not None else self.image_size / 224
        return transform.compose([
            transform.pad(max(1, round(12 * s)), mode="constant", constant_value=0.5),
            transform.jitter(max(2, round(8 * s))),
            transform.random_scale([1 + (i - 5) / 50.0 for i in range(11)]),
            transform.random_rotate(list(range(-10, 11)) + 5 * [0]),
            transform.jitter(max(2, round(4 * s))),
        ])

    @single_threaded()  # the same renderings whatever the thread count (benchmark.core.threads)
    def render(self, objective: Callable[[Tensor], Tensor], num: int, normalize: Normalize) -> Rendering:
        """Optimise ``num`` images, image i for objective i; see the module docstring."""
        check_args(num, self.image_size, self.steps, self.lr)
        param, transform = _lucent()
        device = torch.device(self.device)
        size_in = self.input_size or self.image_size
        with seeded(self.seed):
            params, image_f = param.image(self.image_size, batch=num, sd=self.sd,
                                          fft=self.fft, decorrelate=self.decorrelate)
            augment = self._transform(transform)
            optimizer = torch.optim.Adam(params, lr=self.lr)
            start = score(objective, normalize, image_f().detach(), size_in, device)
            for _ in range(self.steps):
                x = resize(augment(image_f()), size_in).to(device)
                ascend(params, optimizer, evaluate(objective, normalize(x), num).sum())
            final = image_f().detach()
        end = score(objective, normalize, final, size_in, device)
        return Rendering(images=final.float().cpu(), start_scores=start, end_scores=end)
