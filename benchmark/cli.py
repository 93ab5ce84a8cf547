"""The ``polysemy`` command line: list plug-ins, run the benchmark, render tables, bench,
inspect the cache and the synthetic world.

Each subcommand is a small function registered in ``COMMANDS``; heavy imports happen
inside the functions so ``polysemy --help`` stays fast.
"""
from __future__ import annotations

import argparse
import sys
import traceback
from typing import Callable

from benchmark.core.errors import InputError, MissingFileError, PolysemyError, blamed_plugin

COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help: str):
    """Register ``(configure_parser, run)`` under ``name``."""
    def add(pair):
        configure, run = pair
        COMMANDS[name] = (configure, run)
        run.__doc__ = run.__doc__ or help
        configure.help = help  # type: ignore[attr-defined]
        return pair

    return add


# --- list -------------------------------------------------------------------------------
def _list_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("registry", nargs="?", help="only this registry (methods, metrics, models, datasets, embedders, feature_vis)")


def _list(args: argparse.Namespace) -> int:
    from benchmark.core.registry import ALL_REGISTRIES, UnknownNameError

    names = [args.registry] if args.registry else list(ALL_REGISTRIES)
    for name in names:
        if name not in ALL_REGISTRIES:
            raise UnknownNameError(f"unknown registry {name!r}. Available: {', '.join(ALL_REGISTRIES)}")
        registry = ALL_REGISTRIES[name]
        print(f"{name}:")
        for entry in registry.names():
            print(f"  {entry:<24} {registry.describe(entry)}")
    return 0


command("list", "list every registered method, metric, model, dataset, embedder and feature-vis backend")((_list_args, _list))


# --- cache ------------------------------------------------------------------------------
def _cache_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["ls", "clear", "verify"],
                   help="ls: list kinds and entries; clear: delete entries (only files the cache wrote); "
                        "verify: check every entry's checksum")
    p.add_argument("--kind", help="only entries of this kind (capture, world, pure_attributions)")
    p.add_argument("--root", help="cache folder (default: $POLYSEMY_CACHE or ~/.cache/polysemy-bench)")
    p.add_argument("--remove", action="store_true", help="verify: delete the entries that fail")


def _cache(args: argparse.Namespace) -> int:
    from benchmark.storage.cache import Cache, check_kind
    from benchmark.storage.cache_admin import clear, entries, folders, verify

    cache = Cache(args.root)
    if args.action == "clear":
        n = clear(cache, args.kind)
        print(f"removed {n} cache file(s) of {args.kind or 'every kind'} from {cache.root}")
        return 0
    if args.action == "verify":
        checked, problems = verify(cache, remove=args.remove)
        for p in problems:
            print(f"  {p.entry.kind:<18} {p.entry.path.name}: {p.reason}{' (removed)' if args.remove else ''}")
        print(f"verified {checked} entr{'y' if checked == 1 else 'ies'} in {cache.root}: {len(problems)} failed"
              f"{' (each is recomputed on its next use; --remove deletes them)' if problems and not args.remove else ''}")
        return 1 if problems and not args.remove else 0
    kinds = [check_kind(args.kind)] if args.kind else None
    print(f"cache at {cache.root}")
    for f in folders(cache):
        if kinds and f.name not in kinds:
            continue
        print(f"{f.name:<18} {f.role:<12} {f.entries:5d} entries {f.bytes / 1e6:9.2f} MB  {f.description}")
        for e in entries(cache, [f.name]) if f.role == "kind" else ():
            what = ", ".join(f"{k}={e.spec[k]}" for k in ("name", "model", "layer", "dataset", "top_k", "tau", "seed")
                             if k in e.spec)
            print(f"  {e.key[:12]}  {e.bytes / 1e6:8.2f} MB  {what}")
    return 0


command("cache", "list, clear or verify the cache of computed statistics and trained models")((_cache_args, _cache))


# --- capture (a run's captures ahead of it, sharded over the processes of a torchrun launch) --
def _capture_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", default=None,
                   help="a packaged config name or a .toml path (default: synthetic): its pairs, layer and "
                        "detection tracks' models and layers are captured into the cache")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _capture(args: argparse.Namespace) -> int:
    from benchmark.core.config import load_config, parse_override
    from benchmark.run.sharded_capture import capture_command

    return capture_command(load_config(args.config, dict(parse_override(s) for s in args.set)), not args.quiet)


command("capture", "capture a run's statistics into the cache ahead of the run "
        "(sharded under torchrun --nproc_per_node N -m benchmark.cli capture)")((_capture_args, _capture))


# --- run --------------------------------------------------------------------------------
def _run_args(p: argparse.ArgumentParser) -> None:
    from benchmark.run.workers import parse_workers
    p.add_argument("config", nargs="?", default=None,
                   help="a packaged config name (synthetic, imagenet_resnet50) or a .toml path; default: synthetic")
    p.add_argument("--methods", help="comma-separated method names (default: the config's; 'all' = every one)")
    p.add_argument("--metrics", help="comma-separated metric names")
    p.add_argument("--tracks", help="comma-separated tracks to run (planted, pairs, layer, detection)")
    p.add_argument("--layer", help="the layer every track studies (model.layer and each tracks.*.layer)")
    p.add_argument("--targets", type=int, help="targets per track, >= 1 (planted channels, pairs, layer channels); "
                   "for every pair or channel set tracks.pairs.max_pairs=0 or tracks.layer.num_channels=0")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu or cuda")
    p.add_argument("--output", help="output folder (default: the config's output_dir)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key by dotted path, e.g. --set tracks.layer.num_channels=4")
    p.add_argument("--overwrite", action="store_true", help="replace a run of a different config in the output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--workers", type=parse_workers, default="auto",
                   help="unit processes: 'auto' (default) = one per usable CPU, 1 on CUDA; same results for any")


def run_overrides(args: argparse.Namespace) -> dict:
    """Translate the run flags into dotted config overrides."""
    from dataclasses import fields

    from benchmark.core.config import TracksConfig, parse_override

    TRACKS = [f.name for f in fields(TracksConfig)]  # the track names, without importing the tracks
    out: dict = dict(parse_override(s) for s in args.set)
    for flag, key in (("methods", "methods"), ("metrics", "metrics")):
        value = getattr(args, flag)
        if value:
            out[key] = [v.strip() for v in value.split(",") if v.strip()]
    for flag, key in (("layer", "model.layer"), ("seed", "seed"), ("device", "device"), ("output", "output_dir")):
        if getattr(args, flag) is not None:
            out[key] = getattr(args, flag)
    if args.layer is not None:  # a track's own layer would otherwise win over model.layer
        out.update({f"tracks.{t}.layer": args.layer for t in TRACKS})
    if args.targets is not None:
        if args.targets < 1:
            raise InputError(f"--targets must be >= 1, got {args.targets} (for every pair or channel of a track "
                             f"use --set tracks.pairs.max_pairs=0 or --set tracks.layer.num_channels=0)")
        out.update({"tracks.planted.num_channels": args.targets, "tracks.pairs.max_pairs": args.targets,
                    "tracks.layer.num_channels": args.targets})
    if args.tracks:
        chosen = [t.strip() for t in args.tracks.split(",") if t.strip()]
        unknown = sorted(set(chosen) - set(TRACKS))
        if unknown:
            raise InputError(f"unknown track(s) {', '.join(unknown)}; tracks: {', '.join(TRACKS)}")
        out.update({f"tracks.{t}.enabled": t in chosen for t in TRACKS})
    return out


def _run(args: argparse.Namespace) -> int:
    from benchmark.core.config import load_config
    from benchmark.engine.sharding import launched_size
    from benchmark.run.runner import Runner

    if launched_size() > 1:
        raise InputError("polysemy run is one process; under torchrun launch the sharded capture instead "
                         "(torchrun --nproc_per_node N -m benchmark.cli capture CONFIG), then run "
                         "'polysemy run CONFIG' once: it reads the captures from the cache")
    config = load_config(args.config, run_overrides(args))
    out = Runner(config, overwrite=args.overwrite, progress=not args.quiet, workers=args.workers).run()
    print((out / "leaderboard.md").read_text())
    print(f"results in {out}: results.csv, run.json, leaderboard.md/.tex/.csv, figures/")
    return 0


command("run", "run the benchmark (default: the offline synthetic world) into a results folder")((_run_args, _run))


# --- table ------------------------------------------------------------------------------
def _table_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dirs", nargs="+", help="one or more run folders (several combine into one leaderboard)")
    p.add_argument("--format", choices=["markdown", "latex", "csv"], default="markdown")
    p.add_argument("--track", help="only this track")
    p.add_argument("--uncertainty", choices=["bootstrap", "sem"], default="bootstrap",
                   help="cell interval: 95%% bootstrap CI over targets (default) or standard error")
    p.add_argument("--output", help="write the leaderboards (.md/.tex/.csv) into this folder instead of printing")


def _table(args: argparse.Namespace) -> int:
    from pathlib import Path

    from benchmark.reporting.leaderboards import leaderboard, load_results
    from benchmark.reporting.table_formats import render, write_leaderboards

    for d in args.run_dirs:
        if not (Path(d) / "results.csv").exists():
            raise MissingFileError(f"{d} holds no results.csv (is it a run folder?)")
    df = load_results(args.run_dirs)
    if args.output:
        from benchmark.reporting.headline import evidence, headline_sections
        from benchmark.reporting.statistical_report import write_report

        spec, _meta, _calib = evidence(df)
        write_leaderboards(df, Path(args.output), uncertainty=args.uncertainty, preface=headline_sections(df, spec))
        write_report(df, Path(args.output))
        print(f"wrote leaderboards and the statistical report to {args.output}")
        return 0
    tracks = [args.track] if args.track else sorted(df["track"].unique())
    for track in tracks:
        print(f"## {track}\n")
        print(render(leaderboard(df, track=track, uncertainty=args.uncertainty), fmt=args.format))
    return 0


command("table", "render the leaderboard of one or more run folders (Markdown, LaTeX, CSV)")((_table_args, _table))


# --- compare ----------------------------------------------------------------------------
def _compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_a", help="a run folder (or its results.csv)")
    p.add_argument("run_b", help="the run folder to compare it with")
    p.add_argument("--rtol", type=float, default=1e-9, help="relative tolerance of equal values (default 1e-9)")
    p.add_argument("--atol", type=float, default=1e-12, help="absolute tolerance of equal values (default 1e-12)")


def _compare(args: argparse.Namespace) -> int:
    from benchmark.reporting.compare import compare_results

    found = compare_results(args.run_a, args.run_b, rtol=args.rtol, atol=args.atol)
    print(found.summary())
    print("identical within the tolerance" if found.identical else "the runs differ")
    return 0 if found.identical else 1


command("compare", "compare two runs' results value by value (exit 1 when any number differs)")((_compare_args, _compare))


# --- report -----------------------------------------------------------------------------
def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a finished run folder (holds results.csv and cards/)")


def _report(args: argparse.Namespace) -> int:
    from benchmark.reporting.html_report import report_size, write_report
    index = write_report(args.run_dir)
    print(f"wrote {index} ({report_size(args.run_dir) / 1e6:.1f} MB with its thumbnails); open {index.resolve().as_uri()}")
    return 0


command("report", "write RUN_DIR/report/: headline tables, one split card per (target, method); offline")(
    (_report_args, _report))


# --- sweep ------------------------------------------------------------------------------
def _sweep_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweeps", nargs="?", default=None,
                   help="sweep file name or .toml path (default: sensitivity, in benchmark/configs/sweeps)")
    p.add_argument("--output", default="runs/sensitivity", help="folder of the sweep's run folders and sensitivity.md")
    p.add_argument("--detection-run", help="a run folder whose detection track gives the gamma table")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _sweep(args: argparse.Namespace) -> int:
    from benchmark.run.sensitivity import load_sweeps, run_sweeps

    path = run_sweeps(load_sweeps(args.sweeps), args.output, progress=not args.quiet,
                      detection_run=args.detection_run)
    print(f"wrote {path}")
    return 0


command("sweep", "sensitivity sweeps: one method hyperparameter over a few values, one table per parameter")((
    _sweep_args, _sweep))


# --- bench ------------------------------------------------------------------------------
def _bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", default=None, help="config name or .toml path (default: synthetic)")
    p.add_argument("--images", type=int, default=512, help="images for the throughput passes")
    p.add_argument("--attr-images", type=int, default=100, help="references for the attribution timing (PURE: 100)")
    p.add_argument("--attr-neurons", type=int, default=64, help="neurons for the attribution timing")
    p.add_argument("--attr-layer", help="layer whose neurons are attributed (default: the config's layer)")
    p.add_argument("--attr-lower", help="lower layer whose output is attributed (default: the layer's input)")
    p.add_argument("--json", dest="json_path", help="also write the figures as JSON to this file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--device", help="cpu or cuda")
    p.add_argument("--shards", type=int, help="instead: the sharded capture's speed-up on N processes vs 1 "
                   "(torchrun launches; --images fit images)")


def _bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from benchmark.core.config import load_config, parse_override
    from benchmark.run.bench import bench, format_report, write_report

    if args.shards is not None:
        from benchmark.run.shard_bench import format_speedup, sharded_speedup

        print(format_speedup(sharded_speedup(args.config, args.set, args.shards, args.images)))
        return 0
    overrides = dict(parse_override(s) for s in args.set)
    if args.device:
        overrides["device"] = args.device
    report = bench(load_config(args.config, overrides), images=args.images,
                   attribution_images=args.attr_images, attribution_neurons=args.attr_neurons,
                   attribution_layer=args.attr_layer, attribution_lower=args.attr_lower)
    print(format_report(report))
    if args.json_path:
        write_report(report, Path(args.json_path))
        print(f"wrote {args.json_path}")
    return 0


command("bench", "measure throughput, capture overhead, attribution speed-up, fit/metric times and memory")((_bench_args, _bench))


# --- world ------------------------------------------------------------------------------
def _world_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", nargs="?", default="results", help="folder for world_examples.png and world_summary.md")


def _world(args: argparse.Namespace) -> int:
    from benchmark.sources.world.__main__ import main as world_main

    return world_main([args.out_dir])


command("world", "train/load the synthetic world; write its example grid (PNG) and summary (Markdown)")((_world_args, _world))


def build_parser() -> argparse.ArgumentParser:
    from benchmark import __version__

    parser = argparse.ArgumentParser(
        prog="polysemy",
        description="polysemy-bench: compare methods that split polysemantic CNN channels "
        "into monosemantic virtual neurons. `polysemy run` runs the offline default benchmark.",
    )
    parser.add_argument("--version", action="version", version=f"polysemy-bench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (configure, run) in COMMANDS.items():
        p = sub.add_parser(name, help=configure.help, description=configure.help)  # type: ignore[attr-defined]
        configure(p)
        p.set_defaults(func=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except PolysemyError as err:  # a user's mistake: one line
        print(f"polysemy {args.command}: error: {error_line(err)}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno is None:  # raised by code, not by the system: a bug
            return _bug(args.command, err)
        # the machine said no (full disk, no permission, ...): one line, as a user error
        print(f"polysemy {args.command}: error: {error_line(err)}", file=sys.stderr)
        return 2
    except Exception as err:  # a bug: keep the traceback that points at it
        return _bug(args.command, err)


def _bug(command_name: str, err: BaseException) -> int:
    """Print the full traceback of an unexpected exception and one line naming its origin."""
    traceback.print_exception(err, file=sys.stderr)
    origin = blamed_plugin(err)
    where = f"a bug in {origin}" if origin else "a bug in polysemy-bench"
    print(f"polysemy {command_name}: {type(err).__name__} - {where} (traceback above)", file=sys.stderr)
    return 1


def error_line(err: BaseException) -> str:
    """One line for a user-causable error (an OSError names its file and its reason)."""
    if isinstance(err, OSError) and err.strerror and not isinstance(err, FileNotFoundError) or \
            isinstance(err, FileNotFoundError) and err.filename and err.strerror:
        where = f" ({err.filename})" if err.filename else ""
        return f"{err.strerror}{where}" + (" - free some space or choose another folder"
                                           if getattr(err, "errno", None) == 28 else "")
    return " ".join(str(err).split()) or type(err).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
