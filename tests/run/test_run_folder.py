"""Run folders: identity (seeds, code), lock, resume, atomic overwrite, clean-up, early checks."""
from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from benchmark.cli import main
from benchmark.run import folder as run_folder
from benchmark.run.runner import RunDirectoryError, Runner
from tests.fakes import tiny_config

CHEAP = {"methods": ["identity", "arv_surgery"], "metrics": ["activation_ratio", "output_fidelity"],
         "tracks.planted.enabled": False, "tracks.detection.enabled": False, "tracks.layer.enabled": False,
         "figures.enabled": False}


def cheap(tmp_path, **over):
    return tiny_config(tmp_path, **{**CHEAP, **over})


@pytest.fixture
def count_fits(monkeypatch):
    """How many (method, target) units were computed rather than resumed from the folder (the
    cache's finished units, benchmark.run.unit_store, are switched off: these tests are about
    the folder's own parts)."""
    from benchmark.run import unit_store

    monkeypatch.setattr(unit_store, "restore", lambda *args: False)
    calls = {"n": 0}
    original = Runner._split_rows

    def counting(self, *a, **k):
        calls["n"] += 1
        return original(self, *a, **k)

    monkeypatch.setattr(Runner, "_split_rows", counting)
    return calls


def _results(folder):
    return pd.read_csv(folder / "results.csv")


def test_same_identity_resumes_and_the_folder_path_is_not_part_of_it(tmp_path, count_fits, monkeypatch):
    out = tmp_path / "a" / "run"
    Runner(cheap(tmp_path, output_dir="somewhere"), output_dir=out, progress=False).run()
    assert count_fits["n"] == 4  # 2 methods x 2 given pairs
    first = _results(out)
    monkeypatch.chdir(tmp_path / "a")  # spelled relatively, with another output_dir in the config
    Runner(cheap(tmp_path, output_dir="run"), output_dir="./run", progress=False).run()
    assert count_fits["n"] == 4
    moved = tmp_path / "moved"
    shutil.move(str(out), moved)
    Runner(cheap(tmp_path), output_dir=moved, progress=False).run()
    assert count_fits["n"] == 4
    pd.testing.assert_frame_equal(_results(moved), first)


def test_fields_at_their_defaults_are_not_part_of_the_identity(tmp_path, count_fits):
    """A config field added later at a default that keeps the old behaviour leaves existing
    run folders resumable: the identity hashes only the non-default fields, and an identity
    written by an older version (every field spelled out, or one missing) reads the same."""
    from benchmark.core.config import RunConfig, non_default

    assert non_default(RunConfig().to_dict()) == {}
    assert non_default({**RunConfig().to_dict(), "seed": 3}) == {"seed": 3}
    tracks = RunConfig().to_dict()["tracks"]
    tracks["planted"] = {**tracks["planted"], "num_channels": 99}
    assert non_default({"tracks": tracks}) == {"tracks": {"planted": {"num_channels": 99}}}
    out = tmp_path / "run"
    config = cheap(tmp_path)
    Runner(config, output_dir=out, progress=False).run()
    assert count_fits["n"] == 4
    stored = json.loads((out / "identity.json").read_text())
    assert "min_candidate_relevance" not in json.dumps(stored["config"])  # at its default
    spelled_out = {k: v for k, v in config.to_dict().items() if k != "output_dir"}
    older = dict(stored, config=spelled_out)  # an older version's identity: every field
    del older["config"]["tracks"]["planted"]["min_candidate_relevance"]  # ... but a field it did not know
    (out / "identity.json").write_text(json.dumps(older))
    Runner(config, output_dir=out, progress=False).run()
    assert count_fits["n"] == 4  # resumed: nothing recomputed


def test_two_seeds_cannot_mix_in_one_folder(tmp_path):
    out = tmp_path / "run"
    Runner(cheap(tmp_path, seed=0), output_dir=out, progress=False).run()
    with pytest.raises(RunDirectoryError, match="differs in: seed"):
        Runner(cheap(tmp_path, seed=1), output_dir=out, progress=False)
    Runner(cheap(tmp_path, seed=1), output_dir=out, overwrite=True, progress=False).run()
    results = _results(out)
    assert set(results["seed"]) == {1} and len(results) > 0
    assert len(list((out / "parts").glob("*.csv"))) == 4  # the seed-0 parts are gone
    assert json.loads((out / "identity.json").read_text())["config"]["seed"] == 1


def test_a_concurrent_run_into_the_same_folder_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with run_folder.FolderLock(out):  # another run holds the folder
        with pytest.raises(RunDirectoryError, match="in use by another polysemy run .*pid"):
            Runner(cheap(tmp_path, seed=1), output_dir=out, progress=False).run()
    assert not (out / "results.csv").exists() and not (out / "identity.json").exists()
    Runner(cheap(tmp_path, seed=1), output_dir=out, progress=False).run()  # free again
    assert (out / "results.csv").exists()


def test_a_code_change_recomputes_every_part(tmp_path, count_fits, monkeypatch):
    out = tmp_path / "run"
    Runner(cheap(tmp_path), output_dir=out, progress=False).run()
    old_parts = {p.name for p in (out / "parts").glob("*.csv")}
    monkeypatch.setattr(run_folder, "results_code_fingerprint", lambda: "changed-code")
    Runner(cheap(tmp_path), output_dir=out, progress=False).run()  # same config: no --overwrite needed
    assert count_fits["n"] == 8
    new_parts = {p.name for p in (out / "parts").glob("*.csv")}
    assert len(new_parts) == 4 and not (new_parts & old_parts)
    assert json.loads((out / "run.json").read_text())["identity"]["code"] == "changed-code"


def test_a_failed_setup_leaves_a_folder_the_corrected_run_may_use(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Exception, match="nope"):
        Runner(cheap(tmp_path, **{"model.layer": "nope", "tracks.pairs.layer": "nope"}), output_dir=out,
               progress=False).run()
    Runner(cheap(tmp_path), output_dir=out, progress=False).run()  # a different config, not refused
    assert (out / "results.csv").exists()


def test_invalid_config_writes_nothing(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Exception, match="must be >= 0"):
        Runner(cheap(tmp_path, **{"tracks.pairs.max_pairs": -1}), output_dir=out, progress=False)
    with pytest.raises(Exception, match="parameter n_ref of method 'identity' must be an integer, got 'two'"):
        Runner(cheap(tmp_path, **{"method_params.identity.n_ref": "two"}), output_dir=out, progress=False)
    assert not out.exists()


def test_overwrite_is_atomic_and_leaves_nothing_stale(tmp_path, monkeypatch):
    out = tmp_path / "run"
    Runner(cheap(tmp_path, seed=0), output_dir=out, progress=False).run()
    before = _results(out)
    (out / "figures").mkdir()
    (out / "figures" / "density_old_method.png").write_bytes(b"stale figure")
    (out / "notes.txt").write_text("the user's own file")
    original = Runner._run_unit

    def failing(self, *a, **k):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(Runner, "_run_unit", failing)
    with pytest.raises(RuntimeError, match="injected"):
        Runner(cheap(tmp_path, seed=1), output_dir=out, overwrite=True, progress=False).run()
    pd.testing.assert_frame_equal(_results(out), before)  # the old run is intact
    assert json.loads((out / "config.json").read_text())["seed"] == 0
    monkeypatch.setattr(Runner, "_run_unit", original)
    Runner(cheap(tmp_path, seed=1), output_dir=out, overwrite=True, progress=False).run()
    assert set(_results(out)["seed"]) == {1}
    assert not (out / "figures" / "density_old_method.png").exists()
    assert (out / "notes.txt").read_text() == "the user's own file"
    assert not (out / run_folder.STAGING).exists()
    for name in ("report.md", "per_target.csv", "comparisons.md"):  # the report moves with the run
        assert (out / name).exists(), name


def test_leftover_temp_files_are_removed(tmp_path):
    out = tmp_path / "run"
    Runner(cheap(tmp_path), output_dir=out, progress=False).run()
    leftovers = [out / ".results.csv.k2j4.tmp", out / "parts" / ".abc.csv.x1.tmp", out / "figures" / ".g.png.q.tmp"]
    (out / "figures").mkdir(exist_ok=True)
    for path in leftovers:
        path.write_bytes(b"half a file")
    Runner(cheap(tmp_path), output_dir=out, progress=False).run()
    assert not any(p.exists() for p in leftovers)


def test_user_errors_stop_before_setup_with_one_line(tmp_path, monkeypatch, capsys):
    from benchmark.engine import environment
    from benchmark.sources import wordnet

    def setup_reached(*a, **k):
        raise AssertionError("the set-up ran before the checks")

    monkeypatch.setattr(environment.Environment, "__init__", setup_reached)
    config = tmp_path / "tiny.toml"
    tiny_config(tmp_path)  # writes tiny.toml
    run = ["run", str(config), "--output", str(tmp_path / "out"), "--quiet"]

    monkeypatch.setenv("POLYSEMY_CACHE", str(config))  # a file, not a folder
    assert main(run) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a file, not a folder" in err

    monkeypatch.setenv("POLYSEMY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(wordnet, "locate", lambda: None)
    assert main(run) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "WordNet" in err and "benchmark.sources.wordnet_setup" in err
    monkeypatch.undo()

    monkeypatch.setattr(environment.Environment, "__init__", setup_reached)
    monkeypatch.setenv("POLYSEMY_CACHE", str(tmp_path / "cache"))
    assert main([*run, "--set", "figures.fvis_backend=macco"]) == 2
    assert "unknown feature-visualisation backend 'macco'. Did you mean 'maco'" in capsys.readouterr().err
    separation = [*run, "--metrics", "embedding_separation"]
    assert main([*separation, "--set", 'metric_params.embedding_separation.embedder="clip"']) == 2
    assert "unknown embedder 'clip'" in capsys.readouterr().err
    assert main(separation) == 2  # the judge of the synthetic world on another dataset
    assert "embedder 'judge' of embedding_separation only embeds synthetic_world images" in capsys.readouterr().err
    from benchmark.sources.embedders import open_clip as clip

    monkeypatch.setattr(clip, "_cached_checkpoint", lambda cfg, cache_dir: None)
    monkeypatch.setattr(clip, "_online", lambda *a, **k: False)
    assert main([*separation, "--set", 'metric_params.embedding_separation.embedder="open_clip"']) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "open_clip weights ViT-B-32/openai are not in the local cache" in err
    assert main([*run, "--targets", "0"]) == 2
    assert "--targets must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_full_disk_or_unwritable_folder_is_one_line(tmp_path, monkeypatch, capsys):
    import errno
    import os

    from benchmark.cli import error_line
    from benchmark.storage import cache as cache_mod

    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "run" / "results.csv"))
    assert error_line(full) == f"{os.strerror(errno.ENOSPC)} ({tmp_path / 'run' / 'results.csv'}) - free some space " \
                               "or choose another folder"

    def no_space(path, write):
        raise full

    monkeypatch.setattr(cache_mod, "atomic_write", no_space)
    monkeypatch.setenv("POLYSEMY_CACHE", str(tmp_path / "cache"))
    tiny_config(tmp_path)
    assert main(["cache", "verify"]) == 0  # unaffected
    capsys.readouterr()
    with pytest.raises(cache_mod.CacheError, match="not writable .*No space left"):
        cache_mod.ensure_root(tmp_path / "fresh")


def test_an_unwritable_output_folder_is_refused_before_anything_runs(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(RunDirectoryError, match="is a file, not a folder"):
        Runner(cheap(tmp_path), output_dir=blocker / "run", progress=False)


def test_layer_flag_moves_every_track():
    from benchmark.cli import build_parser, run_overrides

    args = build_parser().parse_args(["run", "--layer", "blocks.1.conv2"])
    overrides = run_overrides(args)
    assert overrides["model.layer"] == "blocks.1.conv2"
    assert all(overrides[f"tracks.{t}.layer"] == "blocks.1.conv2" for t in ("planted", "pairs", "layer", "detection"))
