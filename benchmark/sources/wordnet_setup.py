"""Provision WordNet 3.0 for nltk offline: ``python -m benchmark.sources.wordnet_setup``.

Does nothing when nltk already finds ``corpora/wordnet`` (see :mod:`benchmark.sources.wordnet`).
Otherwise it builds ``<folder>/corpora/wordnet`` (``<folder>`` = ``$POLYSEMY_NLTK_DATA``
or ``~/.cache/polysemy-bench/nltk_data``, or ``--target``) from the files of Debian's
``wordnet-base`` and ``wordnet-sense-index`` packages (Princeton WordNet 3.0, same noun
offsets as ImageNet's wnids), installing those packages with apt-get when their files are
absent and we run as root.

nltk's ``WordNetCorpusReader`` opens the files of its ``_FILES`` list: the four
``data.*`` and ``index.*`` files, the four ``*.exc`` exception lists, ``index.sense``,
``cntlist.rev`` and ``lexnames``. Debian ships all but ``lexnames`` (the numbered list of
the 45 lexicographer files, from WordNet's lexnames(5WN) page), which is written here.
nltk refuses symlinks and hard links in its data folders, so files are copied. The folder
is built in a temporary sibling, checked by loading it, and renamed into place.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from benchmark.sources import wordnet as wn

DEBIAN_SOURCE = Path("/usr/share/wordnet")
DEBIAN_PACKAGES = ("wordnet-base", "wordnet-sense-index")

# WordNet 3.0 lexicographer files: (number = position, name, syntactic category:
# 1 noun, 2 verb, 3 adjective, 4 adverb); the content of WordNet's ``lexnames`` file.
LEXNAMES: tuple[tuple[str, int], ...] = (
    ("adj.all", 3), ("adj.pert", 3), ("adv.all", 4), ("noun.Tops", 1), ("noun.act", 1),
    ("noun.animal", 1), ("noun.artifact", 1), ("noun.attribute", 1), ("noun.body", 1),
    ("noun.cognition", 1), ("noun.communication", 1), ("noun.event", 1), ("noun.feeling", 1),
    ("noun.food", 1), ("noun.group", 1), ("noun.location", 1), ("noun.motive", 1),
    ("noun.object", 1), ("noun.person", 1), ("noun.phenomenon", 1), ("noun.plant", 1),
    ("noun.possession", 1), ("noun.process", 1), ("noun.quantity", 1), ("noun.relation", 1),
    ("noun.shape", 1), ("noun.state", 1), ("noun.substance", 1), ("noun.time", 1),
    ("verb.body", 2), ("verb.change", 2), ("verb.cognition", 2), ("verb.communication", 2),
    ("verb.competition", 2), ("verb.consumption", 2), ("verb.contact", 2), ("verb.creation", 2),
    ("verb.emotion", 2), ("verb.motion", 2), ("verb.perception", 2), ("verb.possession", 2),
    ("verb.social", 2), ("verb.stative", 2), ("verb.weather", 2), ("adj.ppl", 3),
)


def lexnames_text() -> str:
    """The ``lexnames`` file: ``NN<TAB>name<TAB>category`` per line, numbered from 00."""
    return "".join(f"{i:02d}\t{name}\t{cat}\n" for i, (name, cat) in enumerate(LEXNAMES))


def needed_files() -> tuple[str, ...]:
    """Files nltk's reader opens, other than ``lexnames`` (taken from nltk itself)."""
    from nltk.corpus.reader import WordNetCorpusReader

    return tuple(f for f in WordNetCorpusReader._FILES if f != "lexnames")


def missing_sources(source: Path) -> list[str]:
    return [f for f in needed_files() if not (source / f).is_file()]


def install_debian_packages(log=print) -> None:
    """``apt-get install -y`` the Debian packages (``apt-get update`` only if that fails)."""
    if shutil.which("apt-get") is None:
        raise SystemExit("apt-get not found: install WordNet 3.0 yourself, e.g. "
                         "python -c \"import nltk; nltk.download('wordnet')\"")
    if os.geteuid() != 0:
        raise SystemExit(f"the WordNet files are not in {DEBIAN_SOURCE}; as root, run "
                         f"apt-get install -y {' '.join(DEBIAN_PACKAGES)} (or rerun this as root)")
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *DEBIAN_PACKAGES]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log("running: " + " ".join(cmd))
    if subprocess.run(cmd, env=env, capture_output=True, text=True).returncode == 0:
        return
    log("install failed; running apt-get update and retrying")
    subprocess.run(["apt-get", "update"], env=env, capture_output=True, text=True)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"apt-get install failed:\n{done.stderr.strip()}")


def check_corpus(folder: Path) -> str:
    """Load the corpus at ``folder`` with nltk and check a known answer; returns the
    WordNet version string. ``folder``'s grandparent must be on ``nltk.data.path``
    (nltk opens files only under its data roots)."""
    from nltk.data import FileSystemPathPointer

    with warnings.catch_warnings():  # "multilingual functions not available": not needed here
        warnings.simplefilter("ignore")
        reader = wn.reader_class()(FileSystemPathPointer(str(folder)), None)
    name = reader.synset_from_pos_and_offset("n", 1440764).name()
    if name != "tench.n.01":
        raise RuntimeError(f"built WordNet is wrong: offset n01440764 is {name}, expected tench.n.01")
    return str(reader.get_version())


def build(target: Path, source: Path, log=print) -> Path:
    """Copy the WordNet files from ``source`` into ``target/corpora/wordnet`` (atomic)."""
    corpora = target / "corpora"
    corpora.mkdir(parents=True, exist_ok=True)
    final = corpora / "wordnet"
    import nltk.data

    if str(target) not in [str(p) for p in nltk.data.path]:
        nltk.data.path.append(str(target))  # nltk opens files only under its data roots
    tmp = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=corpora))
    try:
        for name in needed_files():
            shutil.copyfile(source / name, tmp / name)  # a real copy: nltk rejects links
        (tmp / "lexnames").write_text(lexnames_text(), encoding="utf-8")
        (tmp / "README").write_text(
            f"WordNet 3.0 for nltk, built by benchmark.sources.wordnet_setup from {source}\n"
            f"(Debian packages {', '.join(DEBIAN_PACKAGES)}); lexnames written from lexnames(5WN).\n"
            "WordNet license: see /usr/share/doc/wordnet-base/copyright.\n",
            encoding="utf-8",
        )
        version = check_corpus(tmp)
        os.chmod(tmp, 0o755)
        if final.exists():  # a broken earlier folder nltk could not use: replace it
            old = Path(tempfile.mkdtemp(prefix=".wordnet-old-", dir=corpora))
            os.replace(final, old / "wordnet")
            shutil.rmtree(old)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"built {final} (WordNet {version}, {len(needed_files()) + 1} files)")
    return final


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.sources.wordnet_setup", description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=Path, default=None,
                        help=f"nltk data folder to build into (default: ${wn.PROJECT_DATA_ENV} or ~/.cache/polysemy-bench/nltk_data)")
    parser.add_argument("--source", type=Path, default=DEBIAN_SOURCE, help="folder with the WordNet 3.0 database files")
    parser.add_argument("--no-apt", action="store_true", help="never run apt-get")
    parser.add_argument("--force", action="store_true", help="build even if nltk already finds WordNet")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.target is not None:
        os.environ[wn.PROJECT_DATA_ENV] = str(args.target.expanduser().resolve())
    target = wn.provisioned_dir()

    found = wn.locate()
    if found is not None and not args.force:
        print(f"WordNet already available at {found}; nothing to do.")
        return 0
    missing = missing_sources(args.source)
    if missing and not args.no_apt and args.source == DEBIAN_SOURCE:
        print(f"WordNet files missing in {args.source} ({', '.join(missing)}); installing {', '.join(DEBIAN_PACKAGES)}")
        install_debian_packages()
        missing = missing_sources(args.source)
    if missing:
        print(f"error: {args.source} lacks {', '.join(missing)}; install {' and '.join(DEBIAN_PACKAGES)} "
              "or pass --source", file=sys.stderr)
        return 1
    build(target, args.source)
    hint = "" if args.target is None else f" (set {wn.PROJECT_DATA_ENV}={target} or NLTK_DATA={target} to use it)"
    print(f"WordNet ready in {target} ({time.perf_counter() - start:.1f} s){hint}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
