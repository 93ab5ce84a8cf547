"""MACO feature visualisation (Fel, Boissin, Boutin et al., "Unlocking Feature
Visualization for Deeper Networks with MAgnitude Constrained Optimization", NeurIPS 2023,
arXiv 2306.06805), written with torch alone; the ARV paper (Hesse et al. 2025) renders
its virtual neurons with it.

The Fourier magnitude spectrum is FIXED (estimated from real images of the dataset at
hand with :func:`magnitude_spectrum`, or the 1/f fallback :func:`one_over_f_spectrum`);
only the phase ``phi`` is optimised:

    img = sigmoid(C @ standardise(irfft2(|M| * exp(i * standardise(phi)))))

with ``C`` the colour-correlation square root used by Lucid/MACO (spectra live in the
decorrelated colour basis).  Each step scores ``crops_per_step`` random crops (side a
fraction ``crop_scale`` of the canvas, resized to the model's input) with Gaussian noise,
and ascends with NAdam (lr 1.0, as the authors' Horama code).  The transparency map of the
paper is not computed.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmark.core.registry import FEATURE_VIS
from benchmark.core.threads import single_threaded
from benchmark.engine.fvis._common import Normalize, Rendering, ascend, check_args, evaluate, score

# Square root of ImageNet's RGB colour correlation (Lucid), columns scaled to max norm 1.
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_CORRELATION = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()


def _standardise(x: Tensor) -> Tensor:
    """Zero mean, unit std per image (over channels and pixels)."""
    dims = tuple(range(1, x.dim()))
    return (x - x.mean(dim=dims, keepdim=True)) / (x.std(dim=dims, keepdim=True) + 1e-4)


def _to_decorrelated(images_nchw: Tensor) -> Tensor:
    """RGB -> the decorrelated colour basis (inverse of the recorrelation in rendering)."""
    inv = torch.linalg.inv(COLOR_CORRELATION).to(images_nchw)
    return torch.einsum("nchw,dc->ndhw", images_nchw, inv)


def magnitude_spectrum(images_nchw: Tensor, size: int | None = None, batch_size: int = 256) -> Tensor:
    """Mean |rfft2| of real RGB images in [0, 1], in the decorrelated colour basis.

    Args:
        images_nchw: (N, 3, H, W) real images (the dataset at hand).
        size: resize images to size x size first (default: keep H, W).
    Returns:
        (3, H, W // 2 + 1) magnitude, usable as ``MACO(magnitude=...)``.
    """
    if images_nchw.dim() != 4 or images_nchw.shape[1] != 3 or images_nchw.shape[0] == 0:
        raise ValueError(f"expected a non-empty (N, 3, H, W) batch of RGB images, got {tuple(images_nchw.shape)}")
    total: Tensor | None = None
    for start in range(0, images_nchw.shape[0], batch_size):
        x = images_nchw[start:start + batch_size].detach().float()
        if size is not None:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        mag = torch.fft.rfft2(_to_decorrelated(x), norm="ortho").abs().sum(dim=0)
        total = mag if total is None else total + mag
    assert total is not None  # the batch is non-empty (checked above)
    return total / images_nchw.shape[0]


def one_over_f_spectrum(height: int, width: int | None = None) -> Tensor:
    """(3, H, W // 2 + 1) 1/f magnitude (the natural-image prior used when no data is given)."""
    width = width or height
    fy = torch.fft.fftfreq(height)[:, None]
    fx = torch.fft.rfftfreq(width)[None, :]
    freq = torch.sqrt(fx ** 2 + fy ** 2).clamp(min=1.0 / max(height, width))
    return (1.0 / freq).expand(3, -1, -1).clone()


@FEATURE_VIS.register("maco")
@dataclass(frozen=True)
class MACO:
    """MACO: optimise only the Fourier phase under a fixed natural magnitude (Fel et al. 2023).

    Attributes:
        steps: optimisation steps.
        image_size: side of the rendered canvas.
        input_size: side the model sees (None: ``image_size``).
        lr: NAdam learning rate on the phase.
        seed: seed of the initial phase, crops and noise.
        crops_per_step: random crops scored per step (one objective call each).
        crop_scale: (min, max) crop side as a fraction of the canvas.
        noise: std of Gaussian noise added to the crops.
        device: where the optimisation and the objective run.
        magnitude: (3, h, w // 2 + 1) fixed spectrum from :func:`magnitude_spectrum`
            (resized to the canvas if needed); None: 1/f.
        spectrum: identifies the spectrum in tables and cache keys; set automatically
            ("1/f" or "data:<hash>"); a value passed in is replaced.
    """

    steps: int = 128
    image_size: int = 32
    input_size: int | None = None
    lr: float = 1.0
    seed: int = 0
    crops_per_step: int = 4
    crop_scale: tuple[float, float] = (0.6, 1.0)
    noise: float = 0.05
    device: str = "cpu"
    magnitude: Tensor | None = field(default=None, compare=False, repr=False)
    spectrum: str = "1/f"

    def __post_init__(self) -> None:
        check_args(1, self.image_size, self.steps, self.lr)
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}")
        if self.crops_per_step < 1:
            raise ValueError(f"crops_per_step must be >= 1, got {self.crops_per_step}")
        if self.noise < 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")
        tag = "1/f"
        if self.magnitude is not None:
            m = self.magnitude
            if not isinstance(m, Tensor) or m.dim() != 3 or m.shape[0] != 3:
                raise ValueError("magnitude must be a (3, H, W // 2 + 1) tensor from magnitude_spectrum()")
            digest = hashlib.sha1(m.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()[:12]
            tag = f"data:{digest}"
        object.__setattr__(self, "spectrum", tag)

    def _magnitude(self, device: torch.device) -> Tensor:
        h, w = self.image_size, self.image_size // 2 + 1
        if self.magnitude is None:
            mag = one_over_f_spectrum(self.image_size)
        else:
            mag = self.magnitude.detach().float()
            if mag.shape[1:] != (h, w):
                mag = F.interpolate(mag[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        return mag.to(device)

    def image(self, phase: Tensor, magnitude: Tensor) -> Tensor:
        """(num, 3, H, W) images in [0, 1] from phases (num, 3, H, W // 2 + 1)."""
        spectrum = torch.polar(magnitude.expand_as(phase), _standardise(phase))
        spatial = _standardise(torch.fft.irfft2(spectrum, s=(self.image_size, self.image_size), norm="ortho"))
        rgb = torch.einsum("nchw,dc->ndhw", spatial, COLOR_CORRELATION.to(spatial))
        return torch.sigmoid(rgb)

    def _crops(self, images: Tensor, size: int, gen: torch.Generator) -> Tensor:
        """One random square crop per image (inside the canvas), resized to ``size``, plus noise."""
        n = images.shape[0]
        lo, hi = self.crop_scale
        scale = lo + (hi - lo) * torch.rand(n, generator=gen)
        shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * (1 - scale)[:, None]
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = scale
        theta[:, :, 2] = shift
        grid = F.affine_grid(theta.to(images), [n, 3, size, size], align_corners=False)
        crops = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if self.noise > 0:
            crops = crops + self.noise * torch.randn(crops.shape, generator=gen).to(crops)
        return crops

    @single_threaded()  # the same renderings whatever the thread count (benchmark.core.threads)
    def render(self, objective: Callable[[Tensor], Tensor], num: int, normalize: Normalize) -> Rendering:
        """Optimise ``num`` images, image i for objective i; see the module docstring."""
        check_args(num, self.image_size, self.steps, self.lr)
        device = torch.device(self.device)
        size_in = self.input_size or self.image_size
        gen = torch.Generator().manual_seed(self.seed)
        magnitude = self._magnitude(device)
        phase = torch.randn((num, *magnitude.shape), generator=gen).to(device).requires_grad_(True)
        optimizer = torch.optim.NAdam([phase], lr=self.lr)
        start = score(objective, normalize, self.image(phase, magnitude).detach(), size_in, device)
        for _ in range(self.steps):
            img = self.image(phase, magnitude)
            total: Tensor = sum(evaluate(objective,  # type: ignore[assignment]  # a sum of tensors is a tensor
                                          normalize(self._crops(img, size_in, gen)), num).sum()
                        for _ in range(self.crops_per_step))
            ascend([phase], optimizer, total / self.crops_per_step)
        final = self.image(phase, magnitude).detach()
        end = score(objective, normalize, final, size_in, device)
        return Rendering(images=final.float().cpu(), start_scores=start, end_scores=end)
