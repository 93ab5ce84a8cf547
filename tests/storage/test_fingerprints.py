"""Cache entries and run parts are keyed by the code they depend on (the import graph).

Adding a method file recomputes only that method's parts; editing the capture engine
invalidates the capture statistics and every part built on them, and nothing upstream.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from benchmark.core.plugins import Method
from benchmark.core.registry import METHODS, hyperparameters
from benchmark.run import folder as run_folder
from benchmark.run.runner import Runner
from benchmark.storage import cache as cache_mod
from benchmark.storage import fingerprints
from benchmark.storage.cache import Cache
from tests.fakes import CONFIG

NEW = "new_test_method"


def test_dependencies_follow_the_import_graph():
    deps = fingerprints.dependencies("benchmark.engine.capture")
    assert {"benchmark.engine.capture", "benchmark.engine.layer_stats", "benchmark.engine.layers"} <= deps
    assert not any(d.startswith(("methods", "metrics", "benchmark.run", "benchmark.reporting")) for d in deps)
    assert "benchmark.engine.capture" in fingerprints.dependencies("methods.pure", "benchmark.tracks")


@pytest.fixture
def edited(monkeypatch):
    """``edit(module)``: make the fingerprint see ``module``'s code as changed."""
    real = fingerprints._module_digest

    def edit(module: str) -> None:
        monkeypatch.setattr(fingerprints, "_module_digest",
                            lambda name: "edited" + real(name) if name == module else real(name))
        run_folder.results_code_fingerprint.cache_clear()
        run_folder.plugin_code_fingerprint.cache_clear()

    yield edit
    run_folder.results_code_fingerprint.cache_clear()
    run_folder.plugin_code_fingerprint.cache_clear()


def test_editing_the_capture_engine_invalidates_capture_and_every_part_but_not_the_world(tmp_path, edited):
    from benchmark.sources.world import training
    from benchmark.sources.world.model import WorldCNN

    cache = Cache(tmp_path)
    spec = {"layer": "conv2"}
    world_spec = training.weights_spec(WorldCNN(), {"model": "world_cnn", "seed": 0})
    before = (cache.path("capture", spec), run_folder.results_code_fingerprint(),
              run_folder.plugin_code_fingerprint("methods.identity"), world_spec)
    edited("benchmark.engine.capture")
    after = (cache.path("capture", spec), run_folder.results_code_fingerprint(),
             run_folder.plugin_code_fingerprint("methods.identity"),
             training.weights_spec(WorldCNN(), {"model": "world_cnn", "seed": 0}))
    assert after[0] != before[0]  # capture statistics: recomputed
    assert after[1] != before[1]  # every part of a run: recomputed (the tracks capture)
    assert after[2] == before[2]  # the identity method does not import the capture engine
    assert after[3] == before[3]  # the world's weights do not depend on it: kept


def test_editing_a_method_changes_only_its_own_parts(edited):
    harness = run_folder.results_code_fingerprint()
    identity, pure = (run_folder.plugin_code_fingerprint(m) for m in ("methods.identity", "methods.pure"))
    edited("methods.pure")
    assert run_folder.results_code_fingerprint() == harness
    assert run_folder.plugin_code_fingerprint("methods.identity") == identity
    assert run_folder.plugin_code_fingerprint("methods.pure") != pure
    assert cache_mod.KIND_CODE["pure_attributions"] == ("benchmark.engine.attribution",
                                                         "benchmark.engine.attribution_backends", "methods.pure")


def _parts(folder):
    return {p.name: p.stat().st_mtime_ns for p in (folder / "parts").glob("*.csv")}


def test_adding_a_method_file_recomputes_only_that_methods_parts(tmp_path, monkeypatch):
    text = CONFIG.replace('methods = ["arv_surgery", "pure", "activation_kmeans", "identity", "random_split", "oracle"]',
                          'methods = ["all"]')
    (tmp_path / "all.toml").write_text(text)
    from benchmark.core.config import load_config

    overrides = {"tracks.planted.enabled": False, "tracks.detection.enabled": False, "tracks.layer.enabled": False,
                 "figures.enabled": False, "metrics": ["residual_energy"],
                 **{f"method_params.{name}.n_ref": 10 for name in METHODS.names()
                    if "n_ref" in hyperparameters(METHODS.get(name))}}
    config = load_config(str(tmp_path / "all.toml"), overrides)
    cache, out = Cache(tmp_path / "cache"), tmp_path / "run"
    Runner(config, output_dir=out, cache=cache, progress=False).run()
    first = _parts(out)
    assert first

    @dataclass(frozen=True)
    class NewMethod(Method):
        """test-only: a method added after the first run (the channel itself)."""

        n_ref: int = 10

        def fit(self, context, target):
            return METHODS.get("identity")(n_ref=self.n_ref).fit(context, target)

    METHODS.register(NEW)(NewMethod)
    try:
        Runner(config, output_dir=out, cache=cache, progress=False).run()  # same config ("all")
    finally:
        METHODS._entries.pop(NEW)
    second = _parts(out)
    kept = {name: t for name, t in second.items() if name in first}
    assert kept == first  # every part of the earlier methods reused, untouched
    assert len(second) - len(first) == len(config.tracks.pairs.pairs)  # the new method's parts only
