"""Run folders: identity, a per-folder lock, resume, atomic ``--overwrite``, clean-up.

A run's *identity* is its resolved configuration (seeds included, the output folder's own
path excluded) plus a fingerprint of the harness code that computes results (:data:`HARNESS_CODE` and
every module it imports, read from the import graph; comments and docstrings do not count).
It is stored in ``identity.json``, and every part file name includes its hash and the
fingerprint of the part's own plug-ins (the method's module and the metrics' modules with
everything they import), so parts of another configuration or other code are never read:
they are recomputed, and removed at the end. Adding a method file recomputes only that
method's parts; editing a metric recomputes the parts it scores.

Rules (enforced by :class:`RunFolder`):

* the same identity resumes: finished parts are reused;
* the same configuration with other code resumes too, recomputing every part;
* another configuration is refused while the folder holds finished work (``--overwrite``
  replaces it); a folder whose run never finished a part is simply taken over;
* ``--overwrite`` computes the new run in ``.staging/`` inside the folder and swaps the
  run's outputs in only when it has finished: a failed or killed overwrite leaves the old
  run intact (rerunning the same command resumes the staging run); files the runner did
  not write are never touched;
* one run at a time per folder: ``.polysemy-run.lock`` (an ``flock``, released by the
  operating system even when the process is killed) refuses a second, concurrent run;
* leftover temp files of killed writes are removed when a run starts.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import time
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from benchmark.core.config import non_default
from benchmark.core.errors import PolysemyError
from benchmark.storage.cache import atomic_write_text, canonical_json, spec_key
from benchmark.storage.fingerprints import closure_fingerprint, code_fingerprint, dependencies

LOCK = ".polysemy-run.lock"
STAGING = ".staging"
IDENTITY = "identity.json"
OUTPUTS = ("config.json", IDENTITY, "run.json", "results.csv", "leaderboard.md", "leaderboard.tex",
           "leaderboard.csv", "parts", "traces", "detection", "figures",
           # the statistical report (benchmark.reporting.statistical_report) and the meta-evaluation
           "per_target.csv", "comparisons.csv", "comparisons.md", "detection.csv", "detection.md",
           "report.md", "meta_evaluation.csv", "meta_evaluation.md", "meta_calibration.csv",
           "headline_eligibility.csv",
           # the split cards of every unit, their thumbnails and the HTML report built from them
           "cards", "thumbs", "report")
WORK = ("parts", "traces", "detection", "cards")  # folders of per-unit files (named by unit id)
# What a run's parts depend on besides their plug-ins: the track builders and everything
# they import (environment, capture, planting, ...), the memo and traces the runner wraps
# around a unit, and the runner's own module (how rows are built). Presentation code
# (tables, figures, the CLI) is not imported by any of them, so editing it keeps every part.
HARNESS_CODE = ("benchmark.tracks", "benchmark.engine.environment", "benchmark.engine.memo",
                "benchmark.engine.traces", "benchmark.engine.cards", "benchmark.core.budget")
RUNNER_MODULE = "benchmark.run.runner"


class RunDirectoryError(PolysemyError, RuntimeError):
    """The output folder holds a run of a different configuration, or is in use."""


@lru_cache(maxsize=1)
def results_code_fingerprint() -> str:
    """Fingerprint of the harness code every part depends on (:data:`HARNESS_CODE` and
    the modules it imports, plus the runner module); each part adds its plug-ins' code
    (:func:`plugin_code_fingerprint`)."""
    return code_fingerprint(*dependencies(*HARNESS_CODE), RUNNER_MODULE)


@lru_cache(maxsize=None)
def plugin_code_fingerprint(*modules: str) -> str:
    """Fingerprint of plug-in modules and the project code they import (one part's code)."""
    return closure_fingerprint(*modules)


def identity(config_dict: dict, code: str | None = None) -> dict:
    """The identity of a run: the config without ``output_dir`` and without the fields at
    their defaults (:func:`benchmark.core.config.non_default`: a new config field does not
    change existing identities), the code fingerprint, and their hash ``id``."""
    config = non_default({k: v for k, v in config_dict.items() if k != "output_dir"})
    code = code if code is not None else results_code_fingerprint()
    return {"config": config, "code": code, "id": spec_key({"config": config, "code": code})[:16]}


def _read_identity(folder: Path) -> dict | None:
    """The stored identity; a folder of an older version (config.json only) gets one
    with unknown code."""
    try:
        if (folder / IDENTITY).is_file():
            stored = json.loads((folder / IDENTITY).read_text())
            # an identity of an older version kept the fields at their defaults
            return {**stored, "config": non_default(stored["config"])}
        if (folder / "config.json").is_file():
            return identity(json.loads((folder / "config.json").read_text()), code="unknown")
    except (OSError, ValueError) as err:
        raise RunDirectoryError(f"cannot read the run identity in {folder}: {err}") from None
    return None


def _has_finished_work(folder: Path) -> bool:
    return (folder / "results.csv").is_file() or any((folder / "parts").glob("*.csv"))


def remove_temp_files(folder: Path) -> int:
    """Delete leftover ``.<name>.<random>.tmp`` files of atomic writes under ``folder``."""
    removed = 0
    for sub in [folder, *(folder / d for d in (*WORK, "figures"))]:
        if sub.is_dir():
            for path in sub.glob(".*.tmp"):
                if path.is_file():
                    path.unlink()
                    removed += 1
    return removed


class FolderLock:
    """An exclusive, non-blocking ``flock`` on ``folder/.polysemy-run.lock``."""

    def __init__(self, folder: Path):
        self.path = folder / LOCK
        self.handle = None

    def __enter__(self) -> "FolderLock":
        import fcntl

        self.handle = open(self.path, "a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "another process"
            self.handle.close()
            self.handle = None
            if err.errno in (errno.EAGAIN, errno.EACCES):
                raise RunDirectoryError(f"{self.path.parent} is in use by another polysemy run ({holder}); "
                                        f"wait for it to finish or choose another output folder") from None
            raise
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}")
        self.handle.flush()
        return self

    def __exit__(self, *exc) -> None:
        import fcntl

        if self.handle is not None:
            self.handle.seek(0)
            self.handle.truncate()
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


def check_writable(folder: Path) -> None:
    """Fail fast when ``folder`` (or the nearest existing parent) cannot be written."""
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise RunDirectoryError(f"output folder {folder}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RunDirectoryError(f"output folder {folder} is not writable ({probe} does not allow writing)")


class RunFolder:
    """The output folder of one run (see module docstring); ``work`` is where the run
    writes (the folder itself, or its staging folder during an overwrite)."""

    def __init__(self, out: Path, config_dict: dict, overwrite: bool = False):
        self.out = Path(out)
        self.config_dict = config_dict
        self.identity = identity(config_dict)
        self.overwrite = overwrite
        self.work = self.out
        self.lock: FolderLock | None = None
        self.check()

    @property
    def id(self) -> str:
        return self.identity["id"]

    def check(self) -> None:
        """Refuse (without writing anything) a folder holding another configuration's work."""
        check_writable(self.out)
        if self.out.exists() and not self.out.is_dir():
            raise RunDirectoryError(f"output folder {self.out} is a file")
        theirs = _read_identity(self.out) if self.out.is_dir() else None
        if theirs is None or theirs["config"] == self.identity["config"] or self.overwrite:
            return
        if _has_finished_work(self.out):
            changed = sorted(k for k in set(theirs["config"]) | set(self.identity["config"])
                             if theirs["config"].get(k) != self.identity["config"].get(k))
            raise RunDirectoryError(
                f"{self.out} holds a run of a different configuration (differs in: {', '.join(changed)}); "
                f"choose another output folder or pass --overwrite to replace it once the new run has finished")

    def open(self) -> Path:
        """Lock the folder, clean it up and claim it; returns the folder to write into."""
        self.out.mkdir(parents=True, exist_ok=True)
        self.lock = FolderLock(self.out).__enter__()
        try:
            self.check()  # again, under the lock
            remove_temp_files(self.out)
            theirs = _read_identity(self.out)
            if self.overwrite and theirs is not None and theirs["config"] != self.identity["config"] \
                    and _has_finished_work(self.out):
                self.work = self.out / STAGING
                staged = _read_identity(self.work) if self.work.is_dir() else None
                if staged is not None and staged["id"] != self.id:
                    shutil.rmtree(self.work)
                remove_temp_files(self.work)
            elif (self.out / STAGING).exists():
                shutil.rmtree(self.out / STAGING)  # an abandoned overwrite
            self.work.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.work / IDENTITY, json.dumps(self.identity, indent=2, sort_keys=True))
            atomic_write_text(self.work / "config.json", canonical_json(self.config_dict))
        except BaseException:
            self.close()
            raise
        return self.work

    def part_key(self, unit: str) -> str:
        """The file stem of a unit's part: the unit id within this identity."""
        return spec_key({"run": self.id, "unit": unit})[:20]

    def remove_stale(self, keys: Iterable[str]) -> int:
        """Delete per-unit files (parts, traces, detection tables) of other identities or
        units no longer in the run; returns how many."""
        keep = set(keys)
        removed = 0
        for sub in WORK:
            folder = self.work / sub
            if folder.is_dir():
                for path in folder.iterdir():
                    if path.is_file() and path.stem.rpartition("-")[2] not in keep:
                        path.unlink()
                        removed += 1
        return removed

    def clear_figures(self) -> None:
        """Remove the previous figures before drawing (no stale figure survives a run)."""
        if (self.work / "figures").is_dir():
            shutil.rmtree(self.work / "figures")

    def finish(self) -> Path:
        """After a successful run: move a staging run's outputs into the folder (the old
        run's outputs are replaced item by item; identity.json last), then unlock."""
        if self.work != self.out:
            (self.out / IDENTITY).unlink(missing_ok=True)  # a crash below leaves an unclaimed folder
            for name in OUTPUTS:
                old, new = self.out / name, self.work / name
                if old.is_dir() and not old.is_symlink():
                    shutil.rmtree(old)
                elif old.exists() or old.is_symlink():
                    old.unlink()
                if new.exists() and name != IDENTITY:
                    os.replace(new, old)
            os.replace(self.work / IDENTITY, self.out / IDENTITY)
            shutil.rmtree(self.work)
            self.work = self.out
        self.close()
        return self.out

    def close(self) -> None:
        if self.lock is not None:
            self.lock.__exit__(None, None, None)
            self.lock = None
