"""Addressing layers by module path and reading their input/output with temporary hooks.

Layers are named by ``nn.Module.named_modules`` paths (``layer4.2.conv3``). The *input* of
a layer is its first positional argument, the *output* what it returns. Hooks are always
removed on exit (context managers), so a caller's model is never left modified.
"""
from __future__ import annotations

import contextlib
import difflib
from typing import Iterator

import torch
from torch import Tensor, nn

from benchmark.core.errors import PolysemyError


class UnknownLayerError(PolysemyError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def get_layer(model: nn.Module, path: str) -> nn.Module:
    """The submodule at ``path``; a wrong path gets an error listing close valid names."""
    modules = dict(model.named_modules())
    if path in modules and path != "":
        return modules[path]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(path, names, n=5, cutoff=0.5)
    if not close:
        prefix = path.rsplit(".", 1)[0]
        close = [n for n in names if n.startswith(prefix)][:5] or names[:5]
    raise UnknownLayerError(
        f"no layer {path!r} in {type(model).__name__}. Close valid names: {', '.join(close)}"
    )


def num_output_channels(model: nn.Module, path: str, example: Tensor) -> int:
    """Channels of the layer's output, measured with one forward of ``example``."""
    with capture_layer(model, path) as tap:
        with torch.no_grad():
            model(example[:1])
    return int(tap.output.shape[1])


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[nn.Module]:
    """Parameters stop requiring grad for the block and get their own flags back afterwards
    (also on error). A pass that needs gradients w.r.t. activations only (capture, reference
    attributions, metrics) then records no graph for parameter gradients: autograd keeps
    nothing below the first activation that requires grad, and no weight gradient above
    it. Input and activation gradients are the same numbers."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block (no BatchNorm statistic updates) and restore
    every module's own ``training`` flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


class LayerTap:
    """Holds the input and output seen by a hooked layer during the last forward."""

    input: Tensor
    output: Tensor


@contextlib.contextmanager
def capture_layer(model: nn.Module, path: str, retain_grad: bool = False) -> Iterator[LayerTap]:
    """Record the layer's input and output during forwards inside the ``with`` block.

    With ``retain_grad`` the recorded tensors keep their gradients after a backward.
    """
    tap = LayerTap()
    layer = get_layer(model, path)

    def hook(_module: nn.Module, args: tuple, output: Tensor) -> None:
        tap.input = args[0]
        tap.output = output
        if retain_grad:
            for t in (tap.input, tap.output):
                if t.requires_grad:
                    t.retain_grad()

    handle = layer.register_forward_hook(hook)
    try:
        yield tap
    finally:
        handle.remove()


@contextlib.contextmanager
def replace_output(model: nn.Module, path: str, fn) -> Iterator[None]:
    """Temporarily replace the layer's output by ``fn(input, output)``."""
    layer = get_layer(model, path)
    handle = layer.register_forward_hook(lambda _m, args, out: fn(args[0], out))
    try:
        yield
    finally:
        handle.remove()


class _Stop(Exception):
    pass


def layer_activations(model: nn.Module, path: str, images: Tensor, side: str = "output") -> Tensor:
    """The layer's ``input`` or ``output`` for ``images``; the forward stops at the layer.

    Differentiable w.r.t. ``images`` when grad mode is on.
    """
    if side not in ("input", "output"):
        raise ValueError(f"side must be 'input' or 'output', got {side!r}")
    layer = get_layer(model, path)
    box: dict[str, Tensor] = {}

    def pre_hook(_module: nn.Module, args: tuple) -> None:
        # read the input before the layer runs (an in-place layer would overwrite it)
        box["input"] = args[0]
        raise _Stop

    def hook(_module: nn.Module, args: tuple, output: Tensor) -> None:
        box["output"] = output
        raise _Stop

    handle = layer.register_forward_pre_hook(pre_hook) if side == "input" else layer.register_forward_hook(hook)
    try:
        model(images)
    except _Stop:
        pass
    finally:
        handle.remove()
    if side not in box:
        raise RuntimeError(f"layer {path!r} was not called during the forward pass")
    return box[side]


def channel_activation(model: nn.Module, path: str, channel: int, images: Tensor) -> Tensor:
    """(N, H, W) output map of one channel of the layer."""
    out = layer_activations(model, path, images)
    check_channel(channel, out.shape[1], path)
    return out[:, channel]


def check_channel(channel: int, num_channels: int, path: str) -> None:
    if not 0 <= int(channel) < num_channels:
        raise IndexError(f"channel {channel} out of range: layer {path!r} has {num_channels} channels (0..{num_channels - 1})")
