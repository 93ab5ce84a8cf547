"""torchvision CNNs by name (resnet18/34/50/101, vgg16) with explicit weight provenance.

Weights come from (a) an explicit local file (``weights="/path/resnet50-0676ba61.pth"``),
(b) the torchvision cache under ``$TORCH_HOME/hub/checkpoints`` (``weights="IMAGENET1K_V1"``),
(c) a download when online. Offline and missing, the error names the exact file to place
where. ``weights=None`` builds random weights (tests and code-path checks only).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.hub import get_dir

from benchmark.core.errors import PolysemyError
from benchmark.core.registry import MODELS, UnknownNameError

# name -> (constructor, weights enum) ; the enum gives the canonical file name and URL.
_ARCHS = {
    "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights),
    "resnet34": (torchvision.models.resnet34, torchvision.models.ResNet34_Weights),
    "resnet50": (torchvision.models.resnet50, torchvision.models.ResNet50_Weights),
    "resnet101": (torchvision.models.resnet101, torchvision.models.ResNet101_Weights),
    "vgg16": (torchvision.models.vgg16, torchvision.models.VGG16_Weights),
}


class WeightsError(PolysemyError, RuntimeError):
    """Weights are missing or do not fit the architecture."""


def _checkpoint_dir() -> Path:
    return Path(get_dir()) / "checkpoints"


def _load_state_dict(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file
        raise WeightsError(f"cannot read weights file {path}: {err}") from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"weights file {path} does not hold a state dict")
    return state


def load_torchvision(name: str, weights: str | None = None, allow_download: bool = True) -> nn.Module:
    """Build torchvision model ``name`` in eval mode with the requested weights."""
    if name not in _ARCHS:
        raise UnknownNameError(f"unknown torchvision model {name!r}; available: {', '.join(_ARCHS)}")
    build, enum = _ARCHS[name]
    model = build(weights=None)
    if weights is None:
        return model.eval()
    path = Path(weights).expanduser()
    if not (path.suffix in (".pth", ".pt", ".bin", ".ckpt") or path.exists()):
        try:
            tag = enum[weights]
        except KeyError:
            raise WeightsError(
                f"weights {weights!r} for {name} is neither a file nor a tag; tags: "
                f"{', '.join(w.name for w in enum)}") from None
        path = _checkpoint_dir() / Path(tag.url).name
        if not path.exists():
            if not allow_download:
                raise WeightsError(_missing(name, path, tag.url))
            try:
                torch.hub.download_url_to_file(tag.url, str(path), progress=True)
            except Exception as err:
                raise WeightsError(_missing(name, path, tag.url) + f" (download failed: {err})") from err
    if not path.exists():
        raise WeightsError(f"weights file {path} does not exist")
    state = _load_state_dict(path)
    from benchmark.storage.checkpoints import mismatch_summary

    summary = mismatch_summary(model, state)
    if summary:  # the first mismatched keys with expected and found shapes, not PyTorch's whole dump
        raise WeightsError(f"weights file {path} does not fit {name}: {summary}")
    model.load_state_dict(state)
    return model.eval()


def _missing(name: str, path: Path, url: str) -> str:
    return (f"no weights for {name}: place the file {path.name} at {path} "
            f"(from {url}; TORCH_HOME sets the folder) or pass weights='/path/to/{path.name}'")


def _register(name: str) -> None:
    @MODELS.register(name, description=f"torchvision {name} (weights: file path, tag like IMAGENET1K_V1, or None = random)")
    def factory(weights: str | None = None, allow_download: bool = True, **_unused) -> nn.Module:
        return load_torchvision(name, weights, allow_download)


for _name in _ARCHS:
    _register(_name)
