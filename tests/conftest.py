"""Shared pytest fixtures.

Synthetic world (session-scoped; the first use trains the world CNN and the judge, about
two minutes each on 2 cores, and caches them under ``$POLYSEMY_CACHE`` or
``~/.cache/polysemy-bench``; later sessions load them in under a second):
``world_train``, ``world_val``, ``world_model``, ``judge``, ``judge_embedder``.
"""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def world_train():
    """The synthetic world's train split (20,000 images, seed 0)."""
    from benchmark.sources.world import SyntheticWorld

    return SyntheticWorld("train", seed=0)


@pytest.fixture(scope="session")
def world_val():
    """The synthetic world's validation split (4,000 images, seed 0)."""
    from benchmark.sources.world import SyntheticWorld

    return SyntheticWorld("val", seed=0)


@pytest.fixture(scope="session")
def world_model():
    """The trained world CNN (eval mode; cached after the first training). Do not mutate it."""
    from benchmark.sources.world import load_world_cnn

    return load_world_cnn(seed=0)


@pytest.fixture(scope="session")
def judge():
    """The trained judge network (eval mode; cached after the first training)."""
    from benchmark.sources.world import load_judge

    return load_judge()


@pytest.fixture(scope="session")
def judge_embedder(judge):
    """The registered ``judge`` embedder (uses the same cached judge weights)."""
    from benchmark.core.registry import EMBEDDERS

    return EMBEDDERS.get("judge")()
