"""The README's "Adding a method" and "Adding a metric" examples run exactly as printed.

Each example is taken verbatim from README.md, executed as a module (it registers its
plug-in), checked on the contract world like every registered plug-in, and unregistered.
"""
from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest
import torch

from benchmark.core.plugins import Method, Metric
from benchmark.core.registry import METHODS, METRICS
from benchmark.engine.layers import channel_activation
from tests.fakes import build_plugin, contract_world

README = Path(__file__).resolve().parent.parent / "README.md"


def example(heading: str) -> str:
    """The first ```python block of the README section ``heading``."""
    text = README.read_text()
    section = text[text.index(f"## {heading}\n"):]
    section = section[: section.index("\n## ", 4)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, f"README section {heading!r} has no python example"
    return blocks[0]


def load(heading: str, module_name: str, registry, name: str):
    source = example(heading)
    module = types.ModuleType(module_name)
    module.__file__ = str(README)
    sys.modules[module_name] = module
    try:
        exec(compile(source, f"README.md ({heading})", "exec"), module.__dict__)
    except BaseException:
        registry._entries.pop(name, None)
        raise
    return registry.get(name)


@pytest.fixture
def readme_method():
    cls = load("Adding a method", "readme_brightness_gate", METHODS, "brightness_gate")
    yield cls
    METHODS._entries.pop("brightness_gate")
    sys.modules.pop("readme_brightness_gate")


@pytest.fixture
def readme_metric():
    cls = load("Adding a metric", "readme_gate_balance", METRICS, "gate_balance")
    yield cls
    METRICS._entries.pop("gate_balance")
    sys.modules.pop("readme_gate_balance")


def test_the_method_example_registers_and_keeps_the_contract(readme_method):
    assert issubclass(readme_method, Method) and "brightness_gate" in METHODS.names()
    ctx, target = contract_world()
    split = build_plugin(readme_method).fit(ctx, target)
    x = ctx.heldout.images(range(8))
    with torch.no_grad():
        acts = split.activations(x)
        orig = channel_activation(ctx.model, target.layer, target.channel, x)
    assert acts.shape[1] == 2 and split.recomposition == "gating"
    torch.testing.assert_close(acts.sum(1), orig, atol=1e-5, rtol=0)
    bright = x.mean(dim=(1, 2, 3)) > 0.0
    torch.testing.assert_close(acts[bright, 0], torch.zeros_like(acts[bright, 0]))  # bright -> neuron 1
    assert sum(len(g) for g in split.reference_ids) == 16


def test_the_metric_example_scores_every_method_within_its_bounds(readme_metric):
    assert issubclass(readme_metric, Metric) and readme_metric().label == "gate_balance"
    ctx, target = contract_world()
    values = {}
    for name in ("identity", "duplicate", "oracle", "arv_surgery"):
        split = build_plugin(METHODS.get(name)).fit(ctx, target)
        values[name] = readme_metric().score(split, ctx)["largest_share"]
        assert 0.0 <= values[name] <= 1.0
    assert values["identity"] == pytest.approx(1.0)  # one virtual neuron carries everything
    assert values["duplicate"] == pytest.approx(0.5)  # two equal copies
