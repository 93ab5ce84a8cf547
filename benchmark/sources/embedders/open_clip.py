"""open_clip image embedder for the embedding-separation metric (PURE, Dreyer et al.,
CVPR-W 2024, arXiv 2404.06453, embeds reference crops with CLIP ViT-B/32).

Poolings:

* ``"mean_hidden"``: PURE's embedding, the mean over all tokens (class token included)
  of the vision transformer's last hidden states, i.e. the output of the last residual
  block before ``ln_post`` and the projection (PURE calls HF's
  ``CLIPVisionModel(...).last_hidden_state.mean(1)``).  Read with a forward hook on
  ``visual.transformer`` (removed after each batch).
* ``"projected"``: the standard CLIP image embedding (``model.encode_image``).

Weights: ``pretrained`` is a LOCAL checkpoint file (``open_clip.create_model(arch,
pretrained=path)``) or an open_clip tag (e.g. ``"openai"``), which is used only if its
file is already in the Hugging Face / open_clip cache or the network is reachable.
Random weights (``pretrained=None``) need ``allow_random=True`` and are for tests only.
OpenAI weights loaded from a file need QuickGELU: ``arch="ViT-B-32-quickgelu"`` or
``quick_gelu=True`` (a tag sets it by itself).
"""
from __future__ import annotations

import logging
import os
import socket
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.core.errors import MissingFileError, PolysemyError
from benchmark.core.plugins import Embedder
from benchmark.core.registry import EMBEDDERS

POOLINGS = ("mean_hidden", "projected")

# Module-level cache: (arch, pretrained, quick_gelu, device, cache_dir) -> (model, mean, std, size).
_LOADED: dict[tuple, tuple[nn.Module, Tensor, Tensor, tuple[int, int]]] = {}


class MissingWeightsError(PolysemyError, RuntimeError):
    """The requested CLIP weights are neither a local file nor in the cache, and the
    network is unreachable."""


def _open_clip() -> Any:
    try:
        import open_clip
    except ImportError as err:  # pragma: no cover - dependency of the project
        raise ImportError("the open_clip embedder needs open-clip-torch: pip install open-clip-torch") from err
    return open_clip


def _cached_checkpoint(cfg: dict, cache_dir: str | None) -> str | None:
    """Path of a tag's weights if already downloaded (HF hub cache or open_clip's URL
    cache), without touching the network."""
    if cfg.get("file") and os.path.isfile(cfg["file"]):
        return cfg["file"]
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo_id, filename = os.path.split(hub)  # "org/repo/" -> ("org/repo", "")
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        for name in names:
            found = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir)
            if isinstance(found, str) and os.path.isfile(found):
                return found
    url = cfg.get("url", "")
    if url:
        path = os.path.join(cache_dir or os.path.expanduser("~/.cache/clip"), os.path.basename(url))
        if os.path.isfile(path):
            return path
    return None


def _online(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _missing_message(arch: str, tag: str) -> str:
    return (
        f"open_clip weights {arch}/{tag} are not in the local cache and the network is unreachable. "
        f"Download the checkpoint elsewhere (e.g. open_clip.create_model('{arch}', pretrained='{tag}') on a "
        f"machine with internet, or the file 'open_clip_pytorch_model.bin' from its Hugging Face repo), "
        f"copy it here and pass pretrained='/path/to/file.bin'"
        + (" with quick_gelu=True" if tag == "openai" else "")
        + "; or set HF_HOME to a cache that holds it."
    )


@EMBEDDERS.register("open_clip")
@dataclass(frozen=True)
class OpenClipEmbedder(Embedder):
    """CLIP image embeddings via open_clip (any architecture; tag or local checkpoint).

    Attributes:
        arch: open_clip model name (``open_clip.list_models()``).
        pretrained: a local checkpoint path or a pretrained tag; None only with allow_random.
        pooling: ``"mean_hidden"`` (PURE) or ``"projected"`` (CLIP image embedding).
        device: torch device string.
        batch_size: images per forward pass.
        quick_gelu: force QuickGELU (None: the tag's setting; False for files).
        allow_random: permit ``pretrained=None`` (random weights; tests only).
        cache_dir: download/cache directory passed to open_clip (None: default).
    """

    arch: str = "ViT-B-32"
    pretrained: str | None = "openai"
    pooling: str = "mean_hidden"
    device: str = "cpu"
    batch_size: int = 64
    quick_gelu: bool | None = None
    allow_random: bool = False
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.pretrained is None and not self.allow_random:
            raise ValueError(
                "pretrained=None gives random CLIP weights, which must never be used for reported numbers; "
                "pass a tag (e.g. 'openai') or a local checkpoint path, or allow_random=True in tests"
            )
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    @property
    def name(self) -> str:
        """Table label, e.g. ``open_clip:ViT-B-32/openai/mean_hidden``."""
        if self.pretrained is None:
            weights = "random"
        elif os.path.sep in self.pretrained or os.path.isfile(self.pretrained):
            weights = os.path.basename(self.pretrained)
        else:
            weights = self.pretrained
        return f"open_clip:{self.arch}/{weights}/{self.pooling}"

    def _create(self) -> nn.Module:
        open_clip = _open_clip()
        if self.arch not in open_clip.list_models():
            import difflib

            close = difflib.get_close_matches(self.arch, open_clip.list_models(), n=5)
            raise ValueError(f"unknown open_clip architecture {self.arch!r}; close matches: {close} "
                             f"(all: open_clip.list_models())")
        quick = bool(self.quick_gelu)
        if self.pretrained is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)  # random weights, but the same ones every time
                return open_clip.create_model(self.arch, pretrained=None, force_quick_gelu=quick)
        if os.path.isfile(self.pretrained):
            try:
                return open_clip.create_model(self.arch, pretrained=self.pretrained, force_quick_gelu=quick)
            except Exception as err:  # open_clip raises IndexError, KeyError, RuntimeError... for a bad file
                from benchmark.storage.checkpoints import CheckpointError

                first = (str(err).splitlines() or [""])[0][:300]
                raise CheckpointError(f"checkpoint file {self.pretrained} is not a usable {self.arch} checkpoint "
                                      f"({type(err).__name__}: {first})") from None
        cfg, local = self._resolve_tag()
        quick = cfg.get("quick_gelu", False) if self.quick_gelu is None else self.quick_gelu
        model = open_clip.create_model(self.arch, pretrained=local or self.pretrained,
                                       force_quick_gelu=quick, cache_dir=self.cache_dir)
        for key in ("mean", "std"):  # a cached file loses the tag's preprocessing
            if key in cfg and hasattr(model.visual, "preprocess_cfg"):
                model.visual.preprocess_cfg[key] = tuple(cfg[key])
        return model

    def check_weights(self) -> None:
        """Raise the error that loading would raise for absent weights, without loading
        anything (run before a benchmark's set-up)."""
        if self.pretrained is not None and not os.path.isfile(self.pretrained):
            self._resolve_tag()

    def _resolve_tag(self) -> tuple[dict, str | None]:
        """(open_clip's pretrained config, local file or None to download) of the tag."""
        open_clip = _open_clip()
        cfg = open_clip.get_pretrained_cfg(self.arch, self.pretrained)
        if not cfg:
            looks_like_path = os.path.sep in self.pretrained or self.pretrained.endswith(
                (".bin", ".pt", ".pth", ".safetensors"))
            if looks_like_path:
                raise MissingFileError(f"checkpoint file {self.pretrained!r} does not exist")
            tags = open_clip.list_pretrained_tags_by_model(self.arch)
            raise ValueError(f"{self.pretrained!r} is neither a file nor a pretrained tag of {self.arch}; "
                             f"tags: {tags}")
        local = _cached_checkpoint(cfg, self.cache_dir)
        if local is None and not _online():
            raise MissingWeightsError(_missing_message(self.arch, self.pretrained))
        return cfg, local

    def _model(self) -> tuple[nn.Module, Tensor, Tensor, tuple[int, int]]:
        """The model (loaded once per process and cached), mean, std and input size."""
        key = (self.arch, self.pretrained, self.quick_gelu, self.device, self.cache_dir)
        if key not in _LOADED:
            level = logging.getLogger().level
            logging.getLogger().setLevel(logging.ERROR)  # open_clip logs "initialized randomly" etc.
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    model = self._create()
            finally:
                logging.getLogger().setLevel(level)
            model = model.to(self.device).eval().requires_grad_(False)
            pre = getattr(model.visual, "preprocess_cfg", {}) or {}
            mean = torch.tensor(pre.get("mean", (0.48145466, 0.4578275, 0.40821073))).view(1, 3, 1, 1)
            std = torch.tensor(pre.get("std", (0.26862954, 0.26130258, 0.27577711))).view(1, 3, 1, 1)
            size = model.visual.image_size
            size = (size, size) if isinstance(size, int) else tuple(size)
            _LOADED[key] = (model, mean, std, size)
        return _LOADED[key]

    def preprocess(self, images_nchw: Tensor) -> Tensor:
        """[0, 1] RGB at any size -> the model's input: shortest side resized (bicubic,
        antialiased), centre crop, clamp to [0, 1], CLIP mean/std normalisation."""
        if images_nchw.dim() != 4 or images_nchw.shape[1] != 3:
            raise ValueError(f"expected (N, 3, H, W) RGB images in [0, 1], got {tuple(images_nchw.shape)}")
        _, mean, std, (th, tw) = self._model()
        x = images_nchw.float()
        h, w = x.shape[-2:]
        scale = max(th / h, tw / w)
        nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
        top, left = (nh - th) // 2, (nw - tw) // 2
        x = x[..., top:top + th, left:left + tw].clamp(0, 1)
        return (x - mean.to(x)) / std.to(x)

    @torch.no_grad()
    def embed(self, images_nchw: Tensor) -> Tensor:
        """(N, 3, H, W) [0, 1] RGB images -> (N, D) embeddings on the CPU."""
        model, *_ = self._model()
        out = []
        for start in range(0, images_nchw.shape[0], self.batch_size):
            x = self.preprocess(images_nchw[start:start + self.batch_size]).to(self.device)
            out.append(self._pool(model, x).float().cpu())
        if not out:
            raise ValueError("embed() got an empty batch")
        return torch.cat(out)

    def _pool(self, model: nn.Module, x: Tensor) -> Tensor:
        if self.pooling == "projected":
            return model.encode_image(x)
        transformer = getattr(model.visual, "transformer", None)
        if transformer is None:
            raise ValueError(f"pooling='mean_hidden' needs a vision transformer; {self.arch} has a "
                             f"{type(model.visual).__name__} tower (use pooling='projected')")
        captured: list[Tensor] = []
        handle = transformer.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            model.visual(x)
        finally:
            handle.remove()
        hidden = captured[-1]
        if hidden.shape[0] != x.shape[0]:  # a sequence-first transformer: (L, N, D)
            hidden = hidden.transpose(0, 1)
        return hidden.mean(dim=1)
