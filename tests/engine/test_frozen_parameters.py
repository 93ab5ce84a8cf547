"""Passes that need gradients w.r.t. activations only build no parameter graph.

Capture (importance counters), reference attributions and the metrics' relevance filter
run with the model's parameters frozen (restored afterwards): no parameter requires grad
while they run, none receives a ``.grad``, and the statistics are bitwise those of a pass
with the parameters left trainable.
"""
from __future__ import annotations

import contextlib

import torch

import benchmark.engine.capture as capture_mod
from benchmark.engine.attribution import neuron_attributions
from benchmark.engine.capture import CaptureSpec, capture
from benchmark.engine.layers import frozen_parameters
from tests.fakes import TinyNet, random_images


def _watch_flags(model):
    seen = []
    handle = model.conv2.register_forward_hook(
        lambda *_: seen.append(any(p.requires_grad for p in model.parameters())))
    return seen, handle


def test_capture_freezes_parameters_and_gives_bitwise_the_same_statistics(monkeypatch):
    model, data = TinyNet(seed=0).eval(), random_images(n=40, seed=1)
    seen, handle = _watch_flags(model)
    frozen = capture(model, data, CaptureSpec("conv2", top_k=8, tau=0.05, batch_size=16), progress=False)
    handle.remove()
    assert seen and not any(seen)  # no parameter required grad during the pass
    assert all(p.requires_grad and p.grad is None for p in model.parameters())  # flags back, no .grad
    monkeypatch.setattr(capture_mod, "frozen_parameters", lambda m: contextlib.nullcontext(m))
    trainable = capture(model, data, CaptureSpec("conv2", top_k=8, tau=0.05, batch_size=16), progress=False)
    a, b = frozen.to_tensors(), trainable.to_tensors()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_attributions_leave_no_parameter_gradient():
    model, data = TinyNet(seed=0).eval(), random_images(n=8, seed=2)
    seen, handle = _watch_flags(model)
    neuron_attributions(model, "conv2", "conv1", data.images(range(8)), [0, 1])
    handle.remove()
    assert seen and not any(seen)
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_frozen_parameters_restores_flags_even_on_error():
    model = TinyNet(seed=0)
    model.conv1.weight.requires_grad_(False)  # a caller's own choice is kept as it was
    flags = [p.requires_grad for p in model.parameters()]
    try:
        with frozen_parameters(model):
            assert not any(p.requires_grad for p in model.parameters())
            raise KeyError("boom")
    except KeyError:
        pass
    assert [p.requires_grad for p in model.parameters()] == flags
