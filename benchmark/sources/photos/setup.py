"""Provision the Tux Paint photo stamps offline: ``python -m benchmark.sources.photos.setup``.

The real-photo dataset (:mod:`benchmark.sources.photos.dataset`) reads the PNG cut-outs and their
``.txt`` descriptions of Debian's ``tuxpaint-stamps-default`` (GPL-2; about 30 MB of the
161 MB package). They are never vendored into the repository. The stamps are searched in

1. ``$POLYSEMY_STAMPS`` (a folder holding ``animals/``, ``food/``, ...),
2. ``~/.cache/polysemy-bench/tuxpaint-stamps`` (what this set-up extracts; follows
   ``$POLYSEMY_CACHE``),
3. ``/usr/share/tuxpaint/stamps`` (the installed Debian package).

The set-up does nothing when one of them holds the stamps. Otherwise it installs the
package with apt-get when run as root, or, without root, downloads the ``.deb`` with
``apt-get download`` (or takes ``--deb FILE``) and extracts only its PNG and .txt files
into the cache folder (built in a temporary sibling and renamed into place).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmark.core.errors import MissingFileError

PACKAGE = "tuxpaint-stamps-default"
DEBIAN_STAMPS = Path("/usr/share/tuxpaint/stamps")
STAMPS_ENV = "POLYSEMY_STAMPS"
MARKER = "animals/birds"  # a folder every copy of the stamps holds


class StampsMissingError(MissingFileError):
    """The Tux Paint stamps are not provisioned; the message says how to fix it."""


def cache_dir() -> Path:
    from benchmark.storage.cache import cache_root

    return cache_root() / "tuxpaint-stamps"


def search_path() -> list[Path]:
    env = os.environ.get(STAMPS_ENV)
    return ([Path(env).expanduser()] if env else []) + [cache_dir(), DEBIAN_STAMPS]


def _holds_stamps(folder: Path) -> bool:
    marker = folder / MARKER
    return marker.is_dir() and any(marker.glob("*.png"))


def missing_message(searched: list[Path]) -> str:
    return (f"the Tux Paint photo stamps ({PACKAGE}) were not found. Searched: "
            + ", ".join(map(str, searched))
            + f".\nFix (offline, Debian/Ubuntu; installs the package as root, or extracts it into "
            f"{cache_dir()} without root):\n    python -m benchmark.sources.photos.setup    (or: make setup)\n"
            f"or point ${STAMPS_ENV} at a folder holding the stamps (animals/, food/, ...).")


def locate_stamps(required: bool = False) -> Path | None:
    """The first folder of :func:`search_path` that holds the stamps (None or an error)."""
    for folder in search_path():
        if _holds_stamps(folder):
            return folder
    if required:
        raise StampsMissingError(missing_message(search_path()))
    return None


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)


def install_package(log=print) -> bool:
    """``apt-get install`` the package as root (``apt-get update`` and retry on failure)."""
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", PACKAGE]
    log("running: " + " ".join(cmd))
    if _run(cmd).returncode == 0:
        return True
    _run(["apt-get", "update"])
    return _run(cmd).returncode == 0


def download_deb(folder: Path, log=print) -> Path:
    """``apt-get download`` the package's .deb into ``folder`` (works without root)."""
    log(f"running: apt-get download {PACKAGE}")
    done = _run(["apt-get", "download", PACKAGE], cwd=folder)
    debs = sorted(folder.glob(f"{PACKAGE}_*.deb"))
    if done.returncode != 0 or not debs:
        raise SystemExit(f"apt-get download {PACKAGE} failed ({done.stderr.strip()}); download the .deb by hand "
                         f"and pass --deb FILE")
    return debs[0]


def extract(deb: Path, target: Path, log=print) -> Path:
    """Unpack the PNG and .txt files of ``deb``'s ``usr/share/tuxpaint/stamps`` into ``target``."""
    if shutil.which("dpkg-deb") is None:
        raise SystemExit("dpkg-deb not found: install the package some other way and set " + STAMPS_ENV)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".stamps-", dir=target.parent))
    try:
        done = _run(["dpkg-deb", "-x", str(deb), str(work / "deb")])
        if done.returncode != 0:
            raise SystemExit(f"dpkg-deb -x {deb} failed: {done.stderr.strip()}")
        source = work / "deb" / "usr" / "share" / "tuxpaint" / "stamps"
        if not _holds_stamps(source):
            raise SystemExit(f"{deb} holds no stamps under usr/share/tuxpaint/stamps")
        staged = work / "stamps"
        count = 0
        for path in source.rglob("*"):
            if path.suffix in (".png", ".txt") and path.is_file():
                dest = staged / path.relative_to(source)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dest)
                count += 1
        if target.exists():
            shutil.rmtree(target)
        os.replace(staged, target)
        log(f"extracted {count} PNG/.txt files into {target}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.sources.photos.setup", description=__doc__.splitlines()[0])
    parser.add_argument("--deb", type=Path, default=None, help=f"a downloaded {PACKAGE}_*.deb to extract")
    parser.add_argument("--no-apt", action="store_true", help="never run apt-get (needs --deb when missing)")
    parser.add_argument("--extract", action="store_true", help="extract into the cache even when root could install")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    found = locate_stamps()
    if found is not None and args.deb is None:
        print(f"Tux Paint stamps already available at {found}; nothing to do.")
        return 0
    if args.deb is not None:
        extract(args.deb, cache_dir())
    elif args.no_apt:
        print("error: " + missing_message(search_path()), file=sys.stderr)
        return 1
    elif shutil.which("apt-get") is None:
        print("error: apt-get not found. " + missing_message(search_path()), file=sys.stderr)
        return 1
    elif os.geteuid() == 0 and not args.extract and install_package():
        pass
    else:
        with tempfile.TemporaryDirectory() as tmp:
            extract(download_deb(Path(tmp)), cache_dir())
    found = locate_stamps(required=True)
    print(f"Tux Paint stamps ready in {found} ({time.perf_counter() - start:.1f} s).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
