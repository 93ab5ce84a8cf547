"""WordNet access (benchmark.sources.wordnet) and offline provisioning (benchmark.sources.wordnet_setup).

Needs WordNet 3.0 provisioned (``python -m benchmark.sources.wordnet_setup``); without it these
tests fail with :class:`WordNetMissingError`, whose message says how to fix it.
"""
import math
import os
import subprocess
from pathlib import Path

import nltk.data
import pytest

from benchmark.sources import wordnet as wn
from benchmark.sources import wordnet_setup


@pytest.fixture(scope="module")
def reader():
    return wn.wordnet()


def test_wnid_to_synset_known_answers(reader):
    tench = wn.synset_from_wnid("n01440764")
    assert tench.name() == "tench.n.01"
    assert wn.wnid_of(tench) == "n01440764"
    assert wn.readable_name(tench) == "tench"
    python = wn.synset_from_wnid("n01744401")
    assert python.name() == "rock_python.n.01" and wn.readable_name(python) == "rock python"
    assert wn.wordnet() is reader  # loaded once, then cached


def test_lexnames_file_drives_lexicographer_names(reader):
    assert wn.synset_from_wnid("n01440764").lexname() == "noun.animal"
    assert wn.synset_from_wnid("n04350905").lexname() == "noun.artifact"  # suit
    assert wn.synset_from_wnid("n07730033").lexname() == "noun.food"  # cardoon, the vegetable
    assert wn.synset_from_wnid("n02012849").lexname() == "noun.animal"  # crane, the bird


def test_similarity_known_answers_and_plain_formulas(reader):
    tench, goldfish = wn.synset_from_wnid("n01440764"), wn.synset_from_wnid("n01443537")
    assert round(wn.similarity(tench, goldfish), 4) == 0.9412
    assert round(wn.similarity(tench, goldfish, "wup"), 4) == 0.9412
    # both are cyprinids: shortest is-a path tench -> cyprinid -> goldfish has 2 edges
    assert tench.shortest_path_distance(goldfish) == 2
    assert wn.similarity(tench, goldfish, "path") == pytest.approx(1 / (1 + 2))
    # Leacock-Chodorow: -log((distance + 1) / (2 * max noun depth)), max depth 19 in WN 3.0
    assert wn.similarity(tench, goldfish, "lch") == pytest.approx(-math.log(3 / (2 * 19)))
    # strings work too, and similarity is symmetric
    assert wn.similarity("goldfish.n.01", "n01440764") == wn.similarity(tench, goldfish)
    assert wn.similarity(tench, tench) == 1.0


@pytest.mark.slow  # nltk parses all 82k noun synsets: ~11 s alone, over 20 s on a busy 2-core machine
def test_seeded_noun_depth_equals_nltk_computation(reader):
    key = ("n", False)
    seeded = reader._max_depth.pop(key)
    try:
        assert seeded == wn.NOUN_MAX_DEPTH_WN30
        assert reader._compute_max_depth("n", False) == seeded  # nltk walks all nouns (~10 s)
    finally:
        reader._max_depth[key] = seeded


def test_unknown_measure_lists_allowed(reader):
    with pytest.raises(ValueError, match="allowed: wup, path, lch"):
        wn.similarity("n01440764", "n01443537", measure="resnik")


def test_bad_wnids_are_specific_errors(reader):
    with pytest.raises(ValueError, match="8 digits"):
        wn.synset_from_wnid("01440764")
    with pytest.raises(ValueError, match="offset 00000001"):
        wn.synset_from_wnid("n00000001")
    with pytest.raises(ValueError, match="unknown synset"):
        wn.similarity("tench.n.99", "n01440764")


def test_missing_wordnet_raises_with_the_fix(tmp_path, monkeypatch):
    empty_nltk, empty_own = tmp_path / "nltk_data", tmp_path / "own"
    empty_nltk.mkdir()
    monkeypatch.setattr(nltk.data, "path", [str(empty_nltk)])
    monkeypatch.setenv(wn.PROJECT_DATA_ENV, str(empty_own))
    assert wn.locate() is None
    with pytest.raises(wn.WordNetMissingError) as info:
        wn.synset_from_wnid("n01440764")
    text = str(info.value)
    assert "python -m benchmark.sources.wordnet_setup" in text
    assert "nltk.download('wordnet')" in text
    assert str(empty_nltk) in text and str(empty_own) in text
    assert isinstance(info.value, LookupError)


def test_lexnames_text_is_the_45_lexicographer_files():
    lines = wordnet_setup.lexnames_text().splitlines()
    assert len(lines) == 45
    assert lines[0] == "00\tadj.all\t3" and lines[3] == "03\tnoun.Tops\t1"
    assert lines[5] == "05\tnoun.animal\t1" and lines[44] == "44\tadj.ppl\t3"
    assert [int(line.split("\t")[0]) for line in lines] == list(range(45))


def test_setup_is_a_no_op_when_wordnet_is_found(reader, capsys):
    assert wordnet_setup.main([]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_setup_builds_a_loadable_copy(reader, tmp_path, monkeypatch):
    source = Path(str(wn.locate()))  # the WordNet in use (Debian-built or nltk-downloaded)
    monkeypatch.setattr(nltk.data, "path", list(nltk.data.path))
    monkeypatch.setenv(wn.PROJECT_DATA_ENV, str(tmp_path / "unused"))
    target = tmp_path / "nltk_data"
    assert wordnet_setup.main(["--target", str(target), "--source", str(source), "--no-apt", "--force"]) == 0
    built = target / "corpora" / "wordnet"
    names = sorted(os.listdir(built))
    assert names == sorted([*wordnet_setup.needed_files(), "lexnames", "README"])  # no temp leftovers
    assert sorted(os.listdir(target / "corpora")) == ["wordnet"]
    for name in names:
        info = os.lstat(built / name)
        assert not os.path.islink(built / name) and info.st_nlink == 1
    assert (built / "lexnames").read_text() == wordnet_setup.lexnames_text()
    assert (built / "data.noun").read_bytes() == (source / "data.noun").read_bytes()


def test_setup_reports_missing_source_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(nltk.data, "path", list(nltk.data.path))
    monkeypatch.setenv(wn.PROJECT_DATA_ENV, str(tmp_path / "unused"))
    code = wordnet_setup.main(["--target", str(tmp_path / "t"), "--source", str(tmp_path), "--no-apt", "--force"])
    assert code == 1
    assert "data.noun" in capsys.readouterr().err
    assert not (tmp_path / "t" / "corpora" / "wordnet").exists()


@pytest.mark.parametrize("first_install_fails, expected", [
    (False, [["apt-get", "install"]]),
    (True, [["apt-get", "install"], ["apt-get", "update"], ["apt-get", "install"]]),
])
def test_apt_update_runs_only_after_a_failed_install(monkeypatch, first_install_fails, expected):
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd[:2])
        failed = first_install_fails and len(calls) == 1  # e.g. stale package lists
        return subprocess.CompletedProcess(cmd, 100 if failed else 0, "", "E: Unable to locate package")

    monkeypatch.setattr(wordnet_setup.shutil, "which", lambda name: "/usr/bin/apt-get")
    monkeypatch.setattr(wordnet_setup.os, "geteuid", lambda: 0)
    monkeypatch.setattr(wordnet_setup.subprocess, "run", fake_run)
    wordnet_setup.install_debian_packages(log=lambda text: None)
    assert calls == expected


def test_apt_install_needs_root(monkeypatch):
    monkeypatch.setattr(wordnet_setup.shutil, "which", lambda name: "/usr/bin/apt-get")
    monkeypatch.setattr(wordnet_setup.os, "geteuid", lambda: 1000)
    with pytest.raises(SystemExit, match="as root, run apt-get install -y wordnet-base wordnet-sense-index"):
        wordnet_setup.install_debian_packages(log=lambda text: None)
