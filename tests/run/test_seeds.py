"""The three seeds of a run (data, model, method): resolution and where each one goes."""
from __future__ import annotations

import pytest

from benchmark.core.config import ConfigError, load_config
from benchmark.core.registry import METHODS
from benchmark.core.types import Target
from benchmark.run.plugin_set import resolve
from benchmark.run.runner import RESULT_COLUMNS
from benchmark.tracks import TrackPlan
from tests.fakes import tiny_context


def test_each_seed_defaults_to_seed_and_can_be_set_alone():
    assert tuple(vars(load_config(None, {"seed": 4}).seeds).values()) == (4, 4, 4)
    seeds = load_config(None, {"seed": 4, "data.seed": 1, "model.seed": 2, "method_seed": 3}).seeds
    assert (seeds.data, seeds.model, seeds.method) == (1, 2, 3)
    assert load_config(None, {"model.seed": 9}).seeds.data == 0
    with pytest.raises(ConfigError, match="seed must be an integer"):
        load_config(None, {"seed": "one"})


def test_the_method_seed_reaches_methods_with_a_seed_field_unless_they_name_one():
    (plugin,) = resolve(METHODS, ["random_split"], {}, seed=7)
    assert plugin.instance.seed == 7
    (plugin,) = resolve(METHODS, ["random_split"], {"random_split": {"seed": 2}}, seed=7)
    assert plugin.instance.seed == 2
    (plugin,) = resolve(METHODS, ["identity"], {}, seed=7)  # no seed field: nothing to set
    assert "seed" not in vars(plugin.instance)


def test_results_carry_all_three_seeds():
    assert {"seed", "data_seed", "model_seed", "method_seed"} <= set(RESULT_COLUMNS)


def test_plan_gives_each_target_its_context_and_model_seed():
    c0, c1 = tiny_context(seed=0), tiny_context(seed=1)
    t0, t1 = Target("m@seed0", "conv2", 1), Target("m@seed1", "conv2", 1)
    plan = TrackPlan("planted", "split", c0, (t0, t1), contexts={t1: c1}, model_seeds={t0: 0, t1: 1})
    assert plan.context_of(t0) is c0 and plan.context_of(t1) is c1
    assert plan.model_seed_of(t1, 5) == 1 and plan.model_seed_of(None, 5) == 5
    assert t0.key == t1.key and t0 != t1  # the model name keeps targets of different seeds apart


def test_pooled_rows_name_every_model_and_layer_they_pool():
    c0 = tiny_context(seed=0)
    targets = (Target("a", "conv2", 1), Target("b", "conv1", 0), Target("a", "conv1", 2))
    plan = TrackPlan("detection", "detection", c0, targets)
    assert plan.pooled("model", "run") == "a+b" and plan.pooled("layer", "x") == "conv2+conv1"
    assert TrackPlan("detection", "detection", c0, ()).pooled("model", "run") == "run"
