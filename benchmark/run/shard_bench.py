"""``polysemy bench CONFIG --shards N``: the speed-up of the sharded capture
(:mod:`benchmark.engine.sharding`) over N processes against one process, on this machine.

Each measurement is a ``torchrun --standalone`` launch of this module: every rank loads the
config's model and fit split (from the cache; rank 0 first), then the timed section runs the
capture pass of the rank's shard of the first ``images`` fit images and gathers and merges the
partial statistics (no cache read or write), as :func:`benchmark.engine.capture.cached_capture`
does. Launches: 1 process with torch's default threads (what one ``polysemy`` process does),
1 process with 1 thread, and N processes with 1 thread each (torchrun's default).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

from benchmark.core.errors import InputError

MARK = "SHARD_BENCH "


def _measure(config_name: str | None, overrides: list[str], images: int) -> dict[str, Any]:
    """Inside a launch: the timed sharded capture (rank 0 returns the figures)."""
    import torch

    from benchmark.core.config import load_config, parse_override
    from benchmark.engine import sharding
    from benchmark.engine.capture import CaptureSpec, capture_partial, merge_partials
    from benchmark.engine.environment import Environment
    from benchmark.sources.datasets import Subset

    config = load_config(config_name, dict(parse_override(s) for s in overrides))
    rank, size = sharding.init_from_environment(config.device)
    env = Environment(config, progress=False) if rank == 0 else None
    sharding.barrier("loading the model on rank 0")
    env = env or Environment(config, progress=False)
    layer = env.layer()
    data = Subset(env.fit, range(min(images, len(env.fit))))
    spec = CaptureSpec(layer, top_k=config.capture.top_k, tau=env.tau(env.model, layer, config.model.name),
                       batch_size=config.batch_size)
    capture_partial(env.model, Subset(env.fit, range(config.batch_size)), spec, env.device, progress=False)  # warm-up
    sharding.barrier("warm-up")
    start = time.perf_counter()
    part = capture_partial(env.model, data, spec, env.device, progress=False, shard=(rank, size))
    stats = merge_partials(sharding.all_gather(part, "the benchmark capture"), spec)
    seconds = time.perf_counter() - start
    return {"processes": size, "threads": torch.get_num_threads(), "images": len(data), "layer": layer,
            "seconds": seconds, "channels": stats.num_channels}


def _launch(config_name: str | None, overrides: list[str], images: int, processes: int,
            threads: int | None) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
           "-m", "benchmark.run.shard_bench", "--images", str(images)]
    cmd += [config_name] if config_name else []
    for item in overrides:
        cmd += ["--set", item]
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    else:
        env.pop("OMP_NUM_THREADS", None)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARK)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"the benchmark launch {' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[0][len(MARK):])


def sharded_speedup(config_name: str | None, overrides: list[str], processes: int, images: int) -> dict[str, Any]:
    """The three launches of the module docstring and the speed-ups against each one-process run."""
    if processes < 2:
        raise InputError(f"--shards must be >= 2, got {processes}")
    default = _launch(config_name, overrides, images, 1, None)
    single = _launch(config_name, overrides, images, 1, 1)
    sharded = _launch(config_name, overrides, images, processes, 1)
    return {"one_process": default, "one_process_one_thread": single, "sharded": sharded,
            "speedup_vs_one_process": default["seconds"] / sharded["seconds"],
            "speedup_vs_one_thread": single["seconds"] / sharded["seconds"]}


def format_speedup(report: dict[str, Any]) -> str:
    one, single, sharded = report["one_process"], report["one_process_one_thread"], report["sharded"]
    return "\n".join([
        f"sharded capture, {sharded['layer']}, {sharded['images']} fit images (torchrun --standalone, gloo on the CPU):",
        f"  1 process, {one['threads']} threads:      {one['seconds']:.2f} s",
        f"  1 process, 1 thread:        {single['seconds']:.2f} s",
        f"  {sharded['processes']} processes, 1 thread each: {sharded['seconds']:.2f} s",
        f"  speed-up: {report['speedup_vs_one_process']:.2f}x vs 1 process ({one['threads']} threads), "
        f"{report['speedup_vs_one_thread']:.2f}x vs 1 process (1 thread)"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one launch of the sharded-capture benchmark (run by torchrun)")
    parser.add_argument("config", nargs="?", default=None)
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args(argv)
    figures = _measure(args.config, args.set, args.images)
    if os.environ.get("RANK", "0") == "0":
        print(MARK + json.dumps(figures), flush=True)
    from benchmark.engine.sharding import exit_rank, world

    if world()[1] > 1:
        exit_rank(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
