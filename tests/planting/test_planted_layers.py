"""Where the planted tracks plant: ``tracks.planted.layers`` for the run's model, and a
``model.extra`` model's ``planted_layers`` (default: its ``layers``), checked like its layers."""
from __future__ import annotations

import pytest

from benchmark.core.config import ConfigError
from benchmark.core.registry import MODELS
from benchmark.engine.environment import Environment, extra_model_entry, extra_planted_layers
from benchmark.storage.cache import Cache
from benchmark.tracks.planted import _plant_all
from tests.fakes import NUM_CLASSES, TinyNet, tiny_config

EXTRA = "tiny_test_net_extra"


@MODELS.register(EXTRA, description="test-only second TinyNet (a model.extra subject)")
def _extra_model(seed: int = 0, **_):
    return TinyNet(num_classes=NUM_CLASSES, width=12, out=8, seed=seed + 7).eval()


def _planted_sites(tmp_path, extra: dict) -> set[tuple[str, str]]:
    tmp_path.mkdir()
    overrides = {"model.extra": [extra], "tracks.planted.layers": ["conv2"], "tracks.planted.required": False}
    env = Environment(tiny_config(tmp_path, **overrides), Cache(tmp_path / "cache"), progress=False)
    plans = _plant_all(env, env.config)
    return {(c.get("model", "own"), c["layer"]) for c in plans["planted"].info["candidates"]}


def test_an_extra_model_plants_in_its_planted_layers_and_by_default_in_its_layers(tmp_path):
    named = _planted_sites(tmp_path / "a", {"name": EXTRA, "layers": ["conv2"], "planted_layers": ["conv1"]})
    assert named == {("own", "conv2"), (EXTRA, "conv1")}
    default = _planted_sites(tmp_path / "b", {"name": EXTRA, "layers": ["conv2"]})
    assert default == {("own", "conv2"), (EXTRA, "conv2")}


def test_planted_layers_are_checked_like_layers():
    entry = {"name": EXTRA, "layers": ["conv2"], "planted_layers": ["conv1"]}
    assert extra_model_entry(entry) == (EXTRA, ["conv2"]) and extra_planted_layers(entry) == ["conv1"]
    assert extra_planted_layers({"name": EXTRA, "layers": ["conv2"]}) is None
    for bad in ([], "conv1", ["conv1", 3]):
        with pytest.raises(ConfigError, match="planted_layers must be a non-empty list of layer names"):
            extra_model_entry({"name": EXTRA, "layers": ["conv2"], "planted_layers": bad})
    with pytest.raises(ConfigError, match="optionally planted_layers"):
        extra_model_entry({"name": EXTRA, "layers": ["conv2"], "planted": ["conv1"]})
