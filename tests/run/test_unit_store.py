"""Finished units kept in the cache (benchmark.run.unit_store): a run of the same config and
code into a new folder reads every unit instead of computing it and writes the same bytes;
a corrupted bundle is recomputed, never used."""
from __future__ import annotations

import warnings

from benchmark.run import unit_store
from benchmark.run.runner import Runner
from benchmark.storage.cache import Cache
from tests.fakes import tiny_config


def _files(folder, sub):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted((folder / sub).rglob("*")) if p.is_file()}


def _counting(monkeypatch):
    computed = []
    original = Runner._split_rows

    def counted(self, plan, method, target, key):
        computed.append(key)
        return original(self, plan, method, target, key)

    monkeypatch.setattr(Runner, "_split_rows", counted)
    return computed


def test_a_second_folder_reads_every_unit_from_the_cache_and_writes_the_same_bytes(tmp_path, monkeypatch):
    cache = Cache(tmp_path / "cache")
    config = tiny_config(tmp_path)
    computed = _counting(monkeypatch)
    first = Runner(config, output_dir=tmp_path / "first", cache=cache, progress=False).run()
    assert computed, "the first run computes its units"
    stored = len(list((cache.root / "unit_results").glob("*.safetensors")))
    assert stored == len(list((first / "parts").glob("*.csv")))
    computed.clear()
    second = Runner(config, output_dir=tmp_path / "second", cache=cache, progress=False).run()
    assert computed == []
    assert (first / "results.csv").read_bytes() == (second / "results.csv").read_bytes()
    for sub in ("parts", "cards", "thumbs", "traces", "detection"):
        assert _files(first, sub) == _files(second, sub), sub
    assert not list(second.rglob("*.tmp"))


def test_a_corrupted_bundle_is_recomputed_and_not_used(tmp_path, monkeypatch):
    cache = Cache(tmp_path / "cache")
    config = tiny_config(tmp_path)
    first = Runner(config, output_dir=tmp_path / "first", cache=cache, progress=False).run()
    key = next(p.stem for p in sorted((first / "parts").glob("*.csv")) if (first / "cards" / f"{p.stem}.json").is_file())
    bundle = cache.path(unit_store.KIND, {"unit": key})  # the bundle of a split unit (it has a card)
    data = bytearray(bundle.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte of the payload: the checksum no longer matches
    bundle.write_bytes(bytes(data))
    computed = _counting(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the cache warns that it recomputes the entry
        second = Runner(config, output_dir=tmp_path / "second", cache=cache, progress=False).run()
    assert computed == [key]  # that unit alone is computed again
    assert (first / "results.csv").read_bytes() == (second / "results.csv").read_bytes()
    assert bundle.read_bytes() != bytes(data)  # stored again, intact
