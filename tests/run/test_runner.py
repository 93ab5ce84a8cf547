"""The runner end to end on a tiny registered model: resume, refusals, specific errors."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from benchmark.core.config import ConfigError, load_config
from benchmark.core.registry import UnknownNameError
from benchmark.engine.layers import UnknownLayerError
from benchmark.run.runner import RunDirectoryError, Runner
from tests.fakes import tiny_config


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """A run that computes every unit: the cache's finished units of an earlier test's run of
    the same config (benchmark.run.unit_store) are not read, so its timings hold every stage."""
    from benchmark.run import unit_store

    tmp = tmp_path_factory.mktemp("full")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(unit_store, "restore", lambda *args: False)
        out = Runner(tiny_config(tmp), output_dir=tmp / "run", progress=False).run()
    return out


def test_run_writes_results_leaderboards_figures_and_provenance(uninterrupted):
    out = uninterrupted
    results = pd.read_csv(out / "results.csv")
    assert set(results["track"]) == {"planted", "pairs", "layer", "detection"}
    assert {"ok", "not_applicable"} <= set(results["status"])
    # surgery is exact: the rewritten model's logits equal the original's
    fidelity = results[(results.method == "arv_surgery") & (results.column == "max_abs_logit_diff")
                       & (results.status == "ok")]
    assert len(fidelity) > 0 and fidelity["value"].max() < 1e-4
    # gating methods have no rewritten model: not applicable, shown as a dash, never 0
    gated = results[(results.method == "pure") & (results.metric == "output_fidelity")]
    assert (gated["status"] == "not_applicable").all() and gated["value"].isna().all()
    # the oracle only applies to planted targets
    oracle = results[(results.method == "oracle") & (results.track == "pairs")]
    assert (oracle["status"] == "not_applicable").all()
    board = (out / "leaderboard.md").read_text()
    assert "—" in board and "arv_surgery" in board
    assert "\\toprule" in (out / "leaderboard.tex").read_text()
    for name in ("per_target.csv", "comparisons.csv", "comparisons.md", "detection.md", "report.md"):
        assert (out / name).is_file(), name  # the statistical report of the reporting step
    run = json.loads((out / "run.json").read_text())
    assert run["seed"] == 0 and "torch" in run["packages"] and run["git_commit"]
    assert run["tracks"]["planted"]["targets"] == 1
    timings = run["timings"]  # per-stage wall times: fits, metrics, traces, figures, tracks
    assert {"fit/arv_surgery", "fit/pure", "metric/activation_ratio", "trace", "figure/fvis_grid",
            "units/planted", "units/detection"} <= set(timings)
    assert sum(v for k, v in timings.items() if k.startswith("units/")) <= timings["units_s"] + 1e-6
    assert timings["units_s"] <= timings["total_s"]
    candidate = run["tracks"]["planted"]["candidates"][0]
    assert candidate["accepted"] is True and candidate["reasons"] == [] and "relevance_c1" in candidate
    assert run["seeds"] == {"data": 0, "model": 0, "method": 0}
    assert {"data_seed", "model_seed", "method_seed"} <= set(results.columns)
    assert set(results.loc[results.track == "planted", "model"]) == {"tiny_test_net@seed0"}
    figures = {p.name for p in (out / "figures").iterdir()}
    assert "density_arv_surgery.png" in figures and "fvis_grid.png" in figures
    assert any(name.startswith("recovery_oracle") for name in figures)
    assert not list(out.rglob("*.tmp"))


def test_resume_after_failure_gives_the_same_table(tmp_path, uninterrupted, monkeypatch):
    config = tiny_config(tmp_path)
    calls = {"n": 0}
    original = Runner._run_unit

    def failing(self, plan, method, target):
        calls["n"] += 1
        if calls["n"] == 7:
            raise RuntimeError("injected failure")
        return original(self, plan, method, target)

    monkeypatch.setattr(Runner, "_run_unit", failing)
    with pytest.raises(RuntimeError, match="injected"):
        Runner(config, output_dir=tmp_path / "run", progress=False).run()
    assert len(list((tmp_path / "run" / "parts").glob("*.csv"))) == 6
    assert not (tmp_path / "run" / "results.csv").exists()
    monkeypatch.setattr(Runner, "_run_unit", original)
    Runner(config, output_dir=tmp_path / "run", progress=False).run()
    resumed = pd.read_csv(tmp_path / "run" / "results.csv")
    full = pd.read_csv(uninterrupted / "results.csv")
    pd.testing.assert_frame_equal(resumed, full)


def test_output_folder_of_a_different_config_is_refused(tmp_path):
    no_tracks = {"tracks.layer.enabled": False, "tracks.detection.enabled": False, "tracks.planted.enabled": False,
                 "figures.enabled": False, "methods": ["identity"], "metrics": ["activation_ratio"]}
    Runner(tiny_config(tmp_path, **no_tracks), output_dir=tmp_path / "run", progress=False).run()
    other = tiny_config(tmp_path, seed=1, **no_tracks)
    with pytest.raises(RunDirectoryError, match="different configuration .*differs in: seed"):
        Runner(other, output_dir=tmp_path / "run", progress=False)
    Runner(other, output_dir=tmp_path / "run", overwrite=True, progress=False).run()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["seed"] == 1


def test_a_planted_track_without_valid_candidates_stops_the_run_unless_it_is_optional(tmp_path):
    strict = {"tracks.layer.enabled": False, "tracks.detection.enabled": False, "tracks.pairs.enabled": False,
              "figures.enabled": False, "methods": ["identity"], "metrics": ["activation_ratio"],
              "tracks.planted.min_response": 1e9}  # no candidate can pass
    with pytest.raises(ValueError, match="no planted candidate passed.*required = false"):
        Runner(tiny_config(tmp_path, **strict), output_dir=tmp_path / "strict", progress=False).run()
    optional = {**strict, "tracks.pairs.enabled": True, "tracks.planted.required": False}
    with pytest.warns(UserWarning, match="without planted targets"):
        out = Runner(tiny_config(tmp_path, **optional), output_dir=tmp_path / "optional", progress=False).run()
    results = pd.read_csv(out / "results.csv")
    assert set(results["track"]) == {"pairs"}  # the other tracks ran
    planted = json.loads((out / "run.json").read_text())["tracks"]["planted"]
    assert planted["targets"] == 0 and planted["accepted"] == 0 and planted["candidates"]
    assert "no planted candidate passed" in planted["skipped"]


def test_bad_names_parameters_and_paths_are_specific_errors(tmp_path):
    with pytest.raises(UnknownNameError, match="unknown method 'pur'.*pure"):
        Runner(tiny_config(tmp_path, methods=["pur"]), output_dir=tmp_path / "a", progress=False)
    with pytest.raises(UnknownNameError, match="unknown metric"):
        Runner(tiny_config(tmp_path, metrics=["accuracy"]), output_dir=tmp_path / "b", progress=False)
    with pytest.raises(ConfigError, match="unknown parameter.*n_references.*pure"):
        Runner(tiny_config(tmp_path, **{"method_params.pure.n_references": 3}), output_dir=tmp_path / "c",
               progress=False)
    with pytest.raises(FileNotFoundError, match="data.root"):
        Runner(tiny_config(tmp_path, **{"data.root": str(tmp_path / "missing")}), output_dir=tmp_path / "d",
               progress=False).run()
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


@pytest.mark.parametrize(("overrides", "message"), [
    ({"data.seed": -1}, r"data.seed must be in \[0, 2\^31\), got -1"),
    ({"seed": 2 ** 31}, r"seed must be in \[0, 2\^31\)"),
    ({"method_seed": -3}, r"method_seed must be in"),
    ({"tracks.planted.model_seeds": [1, 1, 2]}, r"lists seed\(s\) \[1\] more than once"),
    ({"tracks.planted.model_seeds": [0, -1]}, r"model_seeds must be integers in \[0, 2\^31\)"),
    ({"tracks.pairs.source": "x"}, r"tracks.pairs.source must be one of detected, given, got 'x'"),
])
def test_bad_seeds_and_sources_are_refused_before_anything_is_written(tmp_path, overrides, message):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=message):
        Runner(tiny_config(tmp_path, **overrides), output_dir=out, progress=False)
    assert not out.exists()  # refused before the run folder was made


@pytest.mark.parametrize(("overrides", "message"), [
    ({"tracks.planted.layers": ["nope"]}, r"tracks.planted.layers: no layer 'nope' in WorldCNN\. Close valid names"),
    ({"tracks.layer.layer": "blocks.9"}, r"tracks.layer.layer: no layer 'blocks.9'"),
    ({"tracks.planted.layers": ["blocks.0.bn1"]}, r"planting merges two channels of a Conv2d; 'blocks.0.bn1' is a "
                                                  r"BatchNorm2d\. Conv2d layers: stem.0, "),
])
def test_a_bad_layer_of_the_world_cnn_is_refused_before_any_training(tmp_path, monkeypatch, overrides, message):
    from benchmark.sources.world import model as world_model

    def no_training(*args, **kwargs):
        raise AssertionError("the world CNN was trained or loaded before the layer check")

    monkeypatch.setattr(world_model, "load_or_train", no_training)
    monkeypatch.setenv("POLYSEMY_CACHE", str(tmp_path / "cold-cache"))  # nothing cached
    out = tmp_path / "run"
    with pytest.raises((ConfigError, UnknownLayerError), match=message):
        Runner(load_config("synthetic", overrides), output_dir=out, progress=False)
    assert not out.exists()


def _broken_image_links(folder: Path) -> list[str]:
    broken = []
    for md in sorted(folder.rglob("*.md")):
        for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", md.read_text()):
            if "://" not in target and not (md.parent / target).is_file():
                broken.append(f"{md.relative_to(folder)} -> {target}")
    return broken


def test_every_image_link_of_a_run_resolves(tmp_path, monkeypatch):
    import pandas as pd

    from benchmark.reporting import statistical_report

    # the tiny run has too few targets for a critical-difference panel: draw a fixed one, so
    # the report links a figure that the rest of the run must not delete
    p = pd.DataFrame(1.0, index=["identity", "pure"], columns=["identity", "pure"])
    monkeypatch.setattr(statistical_report, "cd_panels",
                        lambda values, cmp, track: [("fixed", {"identity": 1.0, "pure": 2.0}, p)])
    config = tiny_config(tmp_path, **{"tracks.planted.enabled": False, "tracks.detection.enabled": False,
                                      "tracks.layer.enabled": False})
    out = Runner(config, output_dir=tmp_path / "run", progress=False).run()
    assert "](figures/cd_pairs.png)" in (out / "report.md").read_text()
    assert _broken_image_links(out) == []


def test_every_image_link_of_the_readme_and_the_committed_runs_resolves():
    root = Path(__file__).resolve().parents[2]
    readme = [t for t in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", (root / "README.md").read_text())
              if "://" not in t and not (root / t).is_file()]
    assert readme == [] and _broken_image_links(root / "results") == []
