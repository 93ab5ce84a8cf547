"""The run's memo (benchmark.core.memo): owned by the run, handed to plug-ins as context.memo.

Two runs in one process (two Environments, different models) never see each other's
entries, and no module keeps a memo of its own at module level.
"""
from __future__ import annotations

import importlib
import pkgutil

import pytest
import torch

from benchmark.core.memo import ObjectMemo, RunMemo
from benchmark.core.registry import METHODS
from benchmark.engine.environment import Environment
from benchmark.storage.cache import Cache
from tests.fakes import tiny_config


def test_object_memo_hits_only_for_the_same_objects():
    memo, calls = RunMemo(), []
    a, b = torch.zeros(1), torch.zeros(1)
    compute = lambda: calls.append(1) or len(calls)  # noqa: E731
    assert memo.get("s", (a,), ("k",), compute) == 1
    assert memo.get("s", (a,), ("k",), compute) == 1  # hit
    assert memo.get("s", (b,), ("k",), compute) == 2  # equal content, other object: a miss
    assert memo.get("other", (a,), ("k",), compute) == 3  # sections are apart
    assert len(memo) == 3
    with pytest.raises(ValueError, match="size must be >= 1"):
        ObjectMemo(0)


def _identity_split(env: Environment):
    ctx = env.context(env.layer(None))
    method = METHODS.get("identity")(n_ref=10)
    split = method.fit(ctx, _target(ctx))
    with torch.no_grad():
        split.activations(ctx.heldout.images(range(4)))
    return ctx, split


def _target(ctx):
    from benchmark.core.types import Target

    return Target("tiny", ctx.layer, 0)


def test_two_runs_in_one_process_do_not_share_memo_entries(tmp_path):
    cache = Cache(tmp_path / "cache")
    env_a = Environment(tiny_config(tmp_path, **{"model.seed": 1}), cache, progress=False)
    env_b = Environment(tiny_config(tmp_path, **{"model.seed": 2}), cache, progress=False)
    assert env_a.memo is not env_b.memo
    ctx_a, split_a = _identity_split(env_a)
    assert ctx_a.memo is env_a.memo and len(env_a.memo) > 0  # the channel map of the gating split
    assert len(env_b.memo) == 0  # nothing of run A is visible to run B
    ctx_b, split_b = _identity_split(env_b)
    assert ctx_b.memo is env_b.memo and len(env_b.memo) == len(env_a.memo)
    x = ctx_a.heldout.images(range(4))
    with torch.no_grad():  # different models: different maps, each from its own memo
        assert not torch.equal(split_a.activations(x), split_b.activations(x))


def test_no_module_keeps_a_memo_at_module_level():
    found = []
    for package in ("benchmark", "methods", "metrics"):
        for info in pkgutil.walk_packages(importlib.import_module(package).__path__, prefix=f"{package}."):
            module = importlib.import_module(info.name)
            for name, value in vars(module).items():
                if isinstance(value, (ObjectMemo, RunMemo)):
                    found.append(f"{info.name}.{name}")
    assert not found, f"module-level memos (use context.memo): {found}"
