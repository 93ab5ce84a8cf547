"""Crash harness: SIGKILL a run at random moments, resume it, and check that nothing was lost.

    python scripts/crash_harness.py --kills 50 --seed 0            # the README's figure
    python scripts/crash_harness.py --kills 5 --work /tmp/crash    # what CI runs (tests/run/)

1. A reference: the tiny config (tests/fakes.py: a random TinyNet on random images, every
   track, functional planting, figures and the HTML report) run once, uninterrupted, in a
   process of its own with a fresh cache.
2. Phase "run": the same config into a new folder with another fresh cache, killed with
   SIGKILL after a delay drawn uniformly from (0, duration of the reference) and started
   again, ``kills // 2`` times; then run to the end. A try that finishes before its kill is
   checked and the phase starts again from nothing, so every kill meets a run in progress.
3. Phase "overwrite": the folder first holds a finished run of ANOTHER config (two methods
   only); ``--overwrite`` with the tiny config (computed in ``.staging/``, then swapped in)
   is killed the same way ``kills - kills // 2`` times; after each kill the folder must
   hold a complete run, the old or the new one, never a mix; then run to the end.
4. Checks of every finished run: ``results.csv`` equals the reference's (``polysemy
   compare``: every value, status and row); ``polysemy cache verify`` finds no problem; no
   temporary file (``*.tmp``) or staging folder is left in the run folder or the cache.

Each kill is recorded with the stage the killed process had reached, read from what it
left on disk (no part yet: set-up and capture; parts: units; results.csv but no
report: rendering; in the overwrite phase the same inside ``.staging``), and whether the
folder still held a complete run equal to the reference right after the kill.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


VARIANTS = {"full": {}, "old": {"methods": ["identity", "random_split"]}}  # "old": the run an overwrite replaces


def _worker(out: str, overwrite: bool, variant: str = "full") -> int:
    sys.path.insert(0, str(ROOT))
    import tests.fakes  # noqa: F401 (registers the tiny model and dataset)
    from benchmark.run.runner import Runner
    from tests.fakes import tiny_config

    config_dir = Path(out).parent / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    Runner(tiny_config(config_dir, **VARIANTS[variant]), output_dir=out, overwrite=overwrite, progress=False).run()
    return 0


def _spawn(out: Path, cache: Path, overwrite: bool, variant: str = "full") -> subprocess.Popen:
    env = {**os.environ, "POLYSEMY_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(out), "--variant", variant] + \
        (["--overwrite"] if overwrite else [])
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _finish(out: Path, cache: Path, overwrite: bool, variant: str = "full") -> float:
    start = time.perf_counter()
    proc = _spawn(out, cache, overwrite, variant)
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the run into {out} failed (exit {proc.returncode}):\n{err.decode()[-3000:]}")
    return time.perf_counter() - start


def _stage(folder: Path) -> str:
    if (folder / "report" / "index.html").is_file():
        return "finished"
    if (folder / "results.csv").is_file():
        return "rendering"
    if any((folder / "parts").glob("*.csv")):
        return "units"
    return "set-up/capture"


def _same_as(reference: Path, out: Path) -> bool:
    from benchmark.reporting.compare import compare_results

    if not (out / "results.csv").is_file() or not (out / "identity.json").is_file():
        return False
    return compare_results(reference, out).identical


def leftovers(*folders: Path) -> list[str]:
    """Temporary files and staging folders under ``folders`` (nothing should be left)."""
    found = []
    for folder in folders:
        for path in folder.rglob("*"):
            if path.name.endswith(".tmp") or path.name in (".staging", ".report.staging"):
                found.append(str(path))
    return sorted(found)


def _check(reference: Path, out: Path, cache: Path) -> list[str]:
    """What is wrong with a finished run in ``out`` (empty: nothing)."""
    from benchmark.reporting.compare import compare_results
    from benchmark.storage.cache import Cache
    from benchmark.storage.cache_admin import verify

    wrong = []
    comparison = compare_results(reference, out)
    if not comparison.identical:
        wrong.append(comparison.summary(5))
    _, problems = verify(Cache(cache))
    wrong += [f"cache {p.entry.path.name}: {p.reason}" for p in problems]
    wrong += [f"left behind: {path}" for path in leftovers(out.parent, cache)]
    return wrong


def harness(kills: int, seed: int, work: Path) -> dict:
    """Run the harness (see the module docstring); returns its record."""
    import shutil

    rng = random.Random(seed)
    work.mkdir(parents=True, exist_ok=True)
    reference, old_reference = work / "reference" / "run", work / "reference_old" / "run"
    out, cache = work / "crashed" / "run", work / "cache"
    duration = _finish(reference, work / "reference_cache", overwrite=False)
    _finish(old_reference, work / "reference_cache", overwrite=False, variant="old")
    record: dict = {"kills": kills, "seed": seed, "reference_s": round(duration, 1), "killed": 0,
                    "finished_before_kill": 0, "stages": Counter(), "intact_after_overwrite_kill": 0,
                    "overwrite_kills": 0, "problems": []}

    def fresh(overwrite: bool) -> None:
        """A new start: phase "run" from nothing; phase "overwrite" from a finished old run."""
        shutil.rmtree(out.parent, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
        if overwrite:
            _finish(out, cache, overwrite=False, variant="old")

    for phase, n in (("run", kills // 2), ("overwrite", kills - kills // 2)):
        overwrite = phase == "overwrite"
        fresh(overwrite)
        killed, tries = 0, 0
        while killed < n and tries < 3 * n:  # a try that finishes first is not a kill
            tries += 1
            proc = _spawn(out, cache, overwrite)
            try:
                proc.wait(timeout=rng.uniform(0.0, duration))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed += 1
                record["killed"] += 1
                staged = out / ".staging"
                stage = _stage(staged) if overwrite and staged.is_dir() else \
                    ("set-up (nothing staged yet)" if overwrite else _stage(out))
                record["stages"][f"{phase}: {stage}"] += 1
                if overwrite:  # the folder holds the old run, or the new one once swapped: never a mix
                    record["overwrite_kills"] += 1
                    record["intact_after_overwrite_kill"] += _same_as(old_reference, out) or _same_as(reference, out)
                continue
            if proc.returncode != 0:
                raise RuntimeError(f"a resumed run failed (exit {proc.returncode}):\n{proc.stderr.read().decode()[-3000:]}")
            record["finished_before_kill"] += 1  # a finished run: check it, then start again
            record["problems"] += _check(reference, out, cache)
            fresh(overwrite)
        _finish(out, cache, overwrite)
        record["problems"] += _check(reference, out, cache)
    record["stages"] = dict(sorted(record["stages"].items()))
    record["ok"] = not record["problems"]
    return record


def concurrent(work: Path, runs: int = 2) -> dict:
    """``runs`` runs of the tiny config into different folders sharing ONE fresh cache, started
    together; each must equal an uninterrupted run with a cache of its own, and the shared
    cache must verify clean with nothing left behind."""
    from benchmark.reporting.compare import compare_results
    from benchmark.storage.cache import Cache
    from benchmark.storage.cache_admin import verify

    reference = work / "reference" / "run"
    if not (reference / "results.csv").is_file():
        _finish(reference, work / "reference_cache", overwrite=False)
    cache = work / "shared_cache"
    outs = [work / f"concurrent{i}" / "run" for i in range(runs)]
    procs = [_spawn(out, cache, overwrite=False) for out in outs]
    outputs = [p.communicate()[1].decode()[-2000:] for p in procs]  # waits for both
    errors = [text for p, text in zip(procs, outputs) if p.returncode]
    codes = [p.returncode for p in procs]
    same = [o.joinpath("results.csv").is_file() and compare_results(reference, o).identical for o in outs]
    checked, problems = verify(Cache(cache))
    return {"exit_codes": codes, "errors": errors, "equal": same, "cache_entries": checked,
            "cache_problems": [f"{p.entry.path.name}: {p.reason}" for p in problems],
            "leftovers": leftovers(cache, *[o.parent for o in outs])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=50, help="SIGKILLs to try (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--work", default=None, help="scratch folder (default: a new temporary folder)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--overwrite", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="full", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(args.worker, args.overwrite, args.variant)
    if args.kills < 1:
        parser.error(f"--kills must be >= 1, got {args.kills}")
    import tempfile

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="polysemy-crash-"))
    start = time.perf_counter()
    record = harness(args.kills, args.seed, work)
    record["wall_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(record, indent=2))
    print(f"{'OK' if record['ok'] else 'FAILED'}: {record['killed']} of {args.kills} tries killed a run "
          f"({record['finished_before_kill']} finished first and were checked too); every finished run "
          f"{'equal to the uninterrupted one, cache clean, nothing left behind' if record['ok'] else 'NOT OK'}; "
          f"overwrite kills after which the folder held a complete run (old or new) "
          f"{record['intact_after_overwrite_kill']}/{record['overwrite_kills']}")
    return 0 if record["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
