"""The cache clears only what it wrote, verifies checksums and keys entries by code."""
from __future__ import annotations

import pytest
import torch

from benchmark.cli import main
from benchmark.storage import cache as cache_mod
from benchmark.storage import cache_admin, fingerprints
from benchmark.storage.cache import MARKER, Cache, CacheError, code_fingerprint


def _cache_with_wordnet_and_foreign(tmp_path):
    root = tmp_path / "cache"
    cache = Cache(root)
    cache.save("capture", {"layer": "conv2"}, {"x": torch.arange(4.0)})
    cache.save("pure_attributions", {"channel": 1}, {"r": torch.ones(2, 3)})
    wordnet = root / "nltk_data" / "corpora" / "wordnet"
    wordnet.mkdir(parents=True)
    (wordnet / "data.noun").write_text("wordnet")
    foreign = root / "capture" / "notes.txt"  # a file the cache did not write, inside a kind folder
    foreign.write_text("mine")
    project = root / "project"
    project.mkdir()
    (project / "main.py").write_text("print(1)")
    return cache, wordnet / "data.noun", foreign, project / "main.py"


def test_clear_removes_only_entries_and_keeps_wordnet_and_foreign_files(tmp_path, capsys):
    cache, wordnet, foreign, project = _cache_with_wordnet_and_foreign(tmp_path)
    stale_tmp = cache.root / "capture" / f".{'a' * 32}.safetensors.x1y2.tmp"
    stale_tmp.write_bytes(b"half")
    assert main(["cache", "clear", "--root", str(cache.root)]) == 0
    assert "removed 3 cache file(s)" in capsys.readouterr().out
    assert list(cache_admin.entries(cache)) == [] and not stale_tmp.exists()
    assert wordnet.read_text() == "wordnet" and foreign.read_text() == "mine" and project.read_text() == "print(1)"
    assert (cache.root / MARKER).is_file()


def test_clear_of_one_kind_leaves_the_others(tmp_path):
    cache, *_ = _cache_with_wordnet_and_foreign(tmp_path)
    assert cache_admin.clear(cache, "pure_attributions") == 1
    assert [e.kind for e in cache_admin.entries(cache)] == ["capture"]


@pytest.mark.parametrize("kind", ["../victim", "..", "capture/../../victim"])
def test_clear_rejects_path_kinds(tmp_path, kind, capsys):
    cache, *_ = _cache_with_wordnet_and_foreign(tmp_path)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    assert main(["cache", "clear", "--root", str(cache.root), "--kind", kind]) == 2
    assert "must be a kind name, not a path" in capsys.readouterr().err
    assert (victim / "keep.txt").read_text() == "keep" and len(list(cache_admin.entries(cache))) == 2


def test_clear_rejects_an_absolute_kind(tmp_path, capsys):
    cache, *_ = _cache_with_wordnet_and_foreign(tmp_path)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "a.safetensors").write_text("keep")
    assert main(["cache", "clear", "--root", str(cache.root), "--kind", str(victim)]) == 2
    assert "not a path" in capsys.readouterr().err
    assert (victim / "a.safetensors").exists()


def test_unknown_kind_is_an_error_with_a_hint(tmp_path, capsys):
    cache, *_ = _cache_with_wordnet_and_foreign(tmp_path)
    assert main(["cache", "clear", "--root", str(cache.root), "--kind", "captur"]) == 2
    err = capsys.readouterr().err
    assert "unknown cache kind 'captur'. Did you mean 'capture'?" in err and "pure_attributions" in err
    assert len(list(cache_admin.entries(cache))) == 2


def test_unmarked_non_empty_root_is_refused_for_clear_and_for_writes(tmp_path, capsys):
    project = tmp_path / "project"
    (project / "capture").mkdir(parents=True)
    entry = project / "capture" / f"{'b' * 32}.safetensors"
    entry.write_bytes(b"looks like an entry")
    (project / "README.md").write_text("my project")
    assert main(["cache", "clear", "--root", str(project)]) == 2
    assert "no .polysemy-bench-cache marker" in capsys.readouterr().err
    assert entry.exists() and (project / "README.md").exists()
    with pytest.raises(CacheError, match="is not a polysemy-bench cache .*README.md"):
        Cache(project).save("capture", {"layer": "x"}, {"x": torch.zeros(1)})
    assert cache_admin.clear(Cache(tmp_path / "new")) == 0  # a new (absent) root: nothing to do


def test_an_unmarked_root_of_cache_folders_only_is_adopted_on_write(tmp_path):
    root = tmp_path / "old"
    (root / "nltk_data").mkdir(parents=True)
    (root / "world").mkdir()
    Cache(root).save("capture", {"layer": "x"}, {"x": torch.zeros(1)})
    assert (root / MARKER).is_file()


def test_cache_ls_shows_every_kind_and_provisioned_data(tmp_path, capsys):
    cache, *_ = _cache_with_wordnet_and_foreign(tmp_path)
    assert main(["cache", "ls", "--root", str(cache.root)]) == 0
    out = capsys.readouterr().out
    for name in ("capture", "world", "pure_attributions"):
        assert f"\n{name} " in out
    assert "nltk_data" in out and "never cleared" in out and "project" in out and "not cache" in out


def test_unwritable_or_file_root_fails_with_one_line(tmp_path):
    file_root = tmp_path / "file"
    file_root.write_text("x")
    with pytest.raises(CacheError, match="is a file, not a folder"):
        cache_mod.check_writable(file_root)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not __import__("os").access(locked, __import__("os").W_OK):  # root ignores permissions
            with pytest.raises(CacheError, match="not writable"):
                cache_mod.check_writable(locked)
    finally:
        locked.chmod(0o700)


# ---------------------------------------------------------------- integrity
def _flip_data_byte(path, from_end: int = 3) -> None:
    """Flip one bit in the tensor DATA (safetensors stores the header first, data last)."""
    raw = bytearray(path.read_bytes())
    raw[-from_end] ^= 0x10
    path.write_bytes(bytes(raw))


def test_flipped_data_byte_is_detected_by_load_and_by_verify(tmp_path, capsys):
    cache = Cache(tmp_path)
    path = cache.save("capture", {"layer": "conv2"}, {"x": torch.arange(64.0)})
    assert cache.load("capture", {"layer": "conv2"}) is not None
    _flip_data_byte(path)
    assert main(["cache", "verify", "--root", str(tmp_path)]) == 1
    assert "checksum mismatch" in capsys.readouterr().out
    with pytest.warns(UserWarning, match="corrupted: payload checksum mismatch"):
        assert cache.load("capture", {"layer": "conv2"}) is None
    assert main(["cache", "verify", "--root", str(tmp_path), "--remove"]) == 0
    assert not path.exists()


def test_code_fingerprint_ignores_prose_but_not_code(tmp_path, monkeypatch):
    src = tmp_path / "fp_probe_mod.py"
    monkeypatch.syspath_prepend(str(tmp_path))
    versions = {
        "base": '"""Doc."""\ndef f(x):\n    """Doc."""\n    return x + 1\n',
        "prose": '"""Other doc."""\n# a comment\ndef f(x):\n    """Changed."""\n    return x + 1  # note\n',
        "code": '"""Doc."""\ndef f(x):\n    return x + 2\n',
    }
    prints = {}
    for name, text in versions.items():
        src.write_text(text)
        fingerprints._module_digest.cache_clear()
        prints[name] = code_fingerprint("fp_probe_mod")
    fingerprints._module_digest.cache_clear()
    assert prints["base"] == prints["prose"] != prints["code"]


def test_a_code_fingerprint_change_gives_a_different_key(tmp_path, monkeypatch):
    cache = Cache(tmp_path)
    spec = {"layer": "conv2"}
    before = cache.path("capture", spec)
    cache.save("capture", spec, {"x": torch.zeros(2)})
    monkeypatch.setitem(cache_mod.KIND_CODE, "capture", ("benchmark.engine.capture", "benchmark.engine.relevance"))
    assert cache.path("capture", spec) != before
    assert cache.load("capture", spec) is None  # the entry of the old code is not used


def test_flipped_data_byte_of_cached_world_weights_is_detected_and_retrained(tmp_path, monkeypatch):
    from benchmark.sources.world.model import load_world_cnn
    from benchmark.sources.world.training import TrainConfig

    monkeypatch.setenv("POLYSEMY_CACHE", str(tmp_path))
    tiny = dict(train=TrainConfig(epochs=1, batch_size=64), train_size=128, val_size=32, progress=False)
    first = load_world_cnn(seed=3, **tiny)
    (path,) = list((tmp_path / "world").glob("world_cnn-*.safetensors"))
    _flip_data_byte(path, from_end=40)
    with pytest.warns(UserWarning, match="payload checksum mismatch"):
        again = load_world_cnn(seed=3, **tiny)
    for (name, a), b in zip(first.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name  # retrained (deterministic), never the flipped weights
    assert cache_admin.verify(Cache(tmp_path)) == (1, [])  # the rewritten entry is intact


def test_world_weights_key_includes_the_world_code_fingerprint(monkeypatch):
    from benchmark.sources.world import training
    from benchmark.sources.world.model import WorldCNN

    spec = {"model": "world_cnn", "seed": 0}
    before = training.weights_path("world_cnn", training.weights_spec(WorldCNN(), spec))
    monkeypatch.setattr(training, "WORLD_CODE", training.WORLD_CODE + ("benchmark.engine.layers",))
    assert training.weights_path("world_cnn", training.weights_spec(WorldCNN(), spec)) != before


def test_a_weights_file_of_the_wrong_shape_names_the_file_and_the_keys(tmp_path):
    from safetensors.torch import save_file

    from benchmark.core.registry import MODELS
    from benchmark.sources.world.model import WorldCNN
    from benchmark.storage.checkpoints import CheckpointError

    state = {k: v.clone() for k, v in WorldCNN().state_dict().items()}
    name = next(k for k, v in state.items() if v.dim() == 4)
    state[name] = torch.zeros(3, 3, 1, 1)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=rf"bad.safetensors does not fit world_cnn: shape mismatch: {name} "
                                              rf"expected \[\d+, \d+, \d+, \d+\], found \[3, 3, 1, 1\]"):
        MODELS.get("world_cnn")(weights=str(path))
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read weights file .*notes.pt"):
        MODELS.get("world_cnn")(weights=str(text))


def test_flipped_data_byte_of_capture_statistics_is_detected_and_recomputed(tmp_path):
    from benchmark.engine.capture import CaptureSpec, cached_capture
    from tests.fakes import TinyNet, random_images

    cache = Cache(tmp_path)
    model, data = TinyNet(), random_images()
    spec = CaptureSpec("conv2", top_k=4, tau=0.05)
    good = cached_capture(model, data, spec, cache=cache, progress=False)
    (entry,) = list(cache_admin.entries(cache))
    _flip_data_byte(entry.path, from_end=5)
    with pytest.warns(UserWarning, match="payload checksum mismatch"):
        again = cached_capture(model, data, spec, cache=cache, progress=False)
    assert cache.misses == 2
    torch.testing.assert_close(again.attribution_sum, good.attribution_sum)
