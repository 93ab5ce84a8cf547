"""WordNet 3.0 access through nltk: synsets by ImageNet id, readable names, similarity.

ImageNet class ids (``n01440764``) are WordNet 3.0 noun offsets, so a class maps to an
nltk ``Synset`` by offset lookup. The detection track (DESIGN.md, "WordNet gamma
precision/recall", after the ARV paper) calls two classes unrelated when their WordNet
similarity is low; :func:`similarity` offers Wu-Palmer (default), path and
Leacock-Chodorow similarity as nltk defines them.

WordNet is searched where nltk searches (``nltk.data.path``, which includes
``$NLTK_DATA``) and in the project's own folder (``$POLYSEMY_NLTK_DATA``, else
``~/.cache/polysemy-bench/nltk_data``) that ``python -m benchmark.sources.wordnet_setup`` fills.
The reader is loaded lazily, once per location; a missing WordNet raises
:class:`WordNetMissingError` saying how to provision it.
"""
from __future__ import annotations

import os
import re
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from benchmark.core.errors import PolysemyError

PROJECT_DATA_ENV = "POLYSEMY_NLTK_DATA"
RESOURCE = "corpora/wordnet"
_WNID = re.compile(r"^n\d{8}$")
_readers: dict[str, Any] = {}  # location of the corpus -> loaded WordNetCorpusReader


class WordNetMissingError(PolysemyError, LookupError):
    """WordNet is not installed where nltk or this project looks for it."""


def provisioned_dir() -> Path:
    """The project's own nltk data folder: ``$POLYSEMY_NLTK_DATA`` if set, else
    ``~/.cache/polysemy-bench/nltk_data``."""
    env = os.environ.get(PROJECT_DATA_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "polysemy-bench" / "nltk_data"


def missing_message(searched: list[str]) -> str:
    """The text of :class:`WordNetMissingError`: where we looked and how to fix it."""
    return (
        "WordNet (nltk corpus 'corpora/wordnet') was not found. Searched: "
        + ", ".join(searched)
        + ".\nFix, offline (Debian/Ubuntu; installs the packages wordnet-base and "
        "wordnet-sense-index when run as root):\n    python -m benchmark.sources.wordnet_setup\n"
        "or, online:\n    python -c \"import nltk; nltk.download('wordnet')\"\n"
        f"(set ${PROJECT_DATA_ENV} or $NLTK_DATA to use another folder)."
    )


def search_path() -> list[str]:
    """Folders searched for ``corpora/wordnet``, in order: ``nltk.data.path`` (nltk puts
    ``$NLTK_DATA`` first in it), then :func:`provisioned_dir`.

    The project folder is appended to ``nltk.data.path`` itself, because nltk only opens
    files under the roots listed there (and so that ``nltk.corpus.wordnet`` finds it too).
    """
    import nltk.data

    own = str(provisioned_dir())
    if own not in [str(p) for p in nltk.data.path]:
        nltk.data.path.append(own)
    return [str(p) for p in nltk.data.path]


def locate() -> Any | None:
    """nltk's path pointer to the WordNet corpus (folder or zip), or None when absent."""
    import nltk.data

    try:
        return nltk.data.find(RESOURCE, paths=search_path())
    except LookupError:
        return None


@lru_cache(maxsize=1)
def reader_class() -> type:
    """nltk's ``WordNetCorpusReader`` without its identity sense-key re-mapping.

    On load nltk maps the sense keys of the installed ``corpora/wordnet`` (WordNet 3.0) onto
    the loaded corpus for the multilingual (OMW) functions; when the loaded corpus is
    WordNet 3.0 that map is the identity (nltk's ``map30 = None``), yet nltk builds it
    anyway (about 60% of the load time, and it needs ``corpora/wordnet`` installed).
    """
    from nltk.corpus.reader import WordNetCorpusReader

    class WordNet30Reader(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):
            if version == "wordnet" and self.get_version() == "3.0":
                return None
            return super().map_wn(version)

    return WordNet30Reader


def wordnet() -> Any:
    """nltk's ``WordNetCorpusReader``, loaded on first use (a few seconds) and cached.

    Raises:
        WordNetMissingError: WordNet is in none of the folders of :func:`search_path`.
    """
    pointer = locate()
    if pointer is None:
        raise WordNetMissingError(missing_message(search_path()))
    key = str(pointer)
    reader = _readers.get(key)
    if reader is None:
        from nltk.corpus.reader import CorpusReader
        from nltk.corpus.util import LazyCorpusLoader

        # Same wiring as nltk.corpus.wordnet: the multilingual data loads only if used.
        omw = LazyCorpusLoader("omw-2.0", CorpusReader, r".*/wn-data-.*\.tab", encoding="utf8")
        reader = reader_class()(pointer, omw)
        _seed_noun_depth(reader)
        _readers[key] = reader
    return reader


NOUN_MAX_DEPTH_WN30 = 19  # deepest noun hypernym path of WordNet 3.0 (tests recompute it)


def _seed_noun_depth(reader: Any) -> None:
    """Pre-fill nltk's cache of the noun taxonomy depth that Leacock-Chodorow needs;
    nltk would otherwise walk all 82k noun synsets (about 10 s) on the first ``lch``."""
    cache = getattr(reader, "_max_depth", None)
    if isinstance(cache, dict) and reader.get_version() == "3.0":
        cache.setdefault(("n", False), NOUN_MAX_DEPTH_WN30)


def synset_from_wnid(wnid: str) -> Any:
    """The noun synset of an ImageNet/WordNet id: ``"n01440764"`` -> ``Synset('tench.n.01')``.

    Raises:
        ValueError: ``wnid`` is not ``n`` plus 8 digits, or no noun synset has that offset.
    """
    if not isinstance(wnid, str) or not _WNID.match(wnid):
        raise ValueError(f"not a WordNet noun id: {wnid!r} (expected 'n' followed by 8 digits, e.g. 'n01440764')")
    from nltk.corpus.reader.wordnet import WordNetError

    reader = wordnet()
    try:
        with warnings.catch_warnings():  # nltk warns and returns None for a bad offset
            warnings.simplefilter("ignore")
            synset = reader.synset_from_pos_and_offset("n", int(wnid[1:]))
    except WordNetError:
        synset = None
    if synset is None:
        raise ValueError(f"no WordNet 3.0 noun synset has offset {wnid[1:]} ({wnid!r} is not a noun id)")
    return synset


def wnid_of(synset: Any) -> str:
    """The WordNet id of a synset: part of speech plus 8-digit offset (``n01440764``).
    Adjective satellites (pos ``s``) share the adjective file and get ``a``."""
    pos = synset.pos()
    return f"{'a' if pos == 's' else pos}{synset.offset():08d}"


def readable_name(synset: Any) -> str:
    """The synset's first lemma with spaces: ``Synset('rock_python.n.01')`` -> ``rock python``."""
    return synset.lemmas()[0].name().replace("_", " ")


def as_synset(obj: Any) -> Any:
    """A Synset from a Synset, a wnid (``n01440764``) or an nltk name (``tench.n.01``)."""
    if isinstance(obj, str):
        if _WNID.match(obj):
            return synset_from_wnid(obj)
        from nltk.corpus.reader.wordnet import WordNetError

        try:
            return wordnet().synset(obj)
        except (WordNetError, ValueError) as err:
            raise ValueError(f"unknown synset {obj!r}: give a wnid like 'n01440764' or a name like 'tench.n.01' ({err})") from None
    if not (hasattr(obj, "offset") and hasattr(obj, "pos")):
        raise TypeError(f"expected an nltk Synset, a wnid or a synset name, got {type(obj).__name__}")
    return obj


# name -> nltk similarity; the detection track's default is Wu-Palmer.
SIMILARITIES: dict[str, Callable[[Any, Any], Any]] = {
    "wup": lambda a, b: a.wup_similarity(b),  # 2*depth(lcs) / (depth(a)+depth(b)), in (0, 1]
    "path": lambda a, b: a.path_similarity(b),  # 1 / (1 + shortest is-a path), in (0, 1]
    "lch": lambda a, b: a.lch_similarity(b),  # -log(path / (2 * max depth)); about 0.86..3.64 for nouns
}


def similarity(synset_a: Any, synset_b: Any, measure: str = "wup") -> float:
    """WordNet similarity of two synsets (Synsets, wnids or synset names).

    Args:
        measure: ``"wup"`` (Wu-Palmer), ``"path"`` or ``"lch"`` (Leacock-Chodorow; not in
            [0, 1], needs both synsets of the same part of speech).

    Raises:
        ValueError: an unknown measure (the message lists the allowed ones), or the two
            synsets have no similarity under it (no common hypernym / different pos).
    """
    if measure not in SIMILARITIES:
        raise ValueError(f"unknown WordNet similarity measure {measure!r}; allowed: {', '.join(SIMILARITIES)}")
    a, b = as_synset(synset_a), as_synset(synset_b)
    from nltk.corpus.reader.wordnet import WordNetError

    try:
        value = SIMILARITIES[measure](a, b)
    except WordNetError as err:
        raise ValueError(f"{measure} similarity is undefined for {a.name()} and {b.name()}: {err}") from None
    if value is None:
        raise ValueError(f"{measure} similarity is undefined for {a.name()} and {b.name()} (no common hypernym)")
    return float(value)
