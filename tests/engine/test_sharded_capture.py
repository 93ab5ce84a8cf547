"""Sharded capture: shards merge into the single-process statistics, in one process
(known answer: the plain pass) and over 2 processes launched by torchrun (gloo on the CPU);
a rank that dies fails the launch with a clear message and leaves no cache entry."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from benchmark.engine.capture import CaptureSpec, capture, capture_partial, merge_partials, shard_indices
from tests.fakes import CONFIG, TinyNet, random_images

WORKER = Path(__file__).with_name("sharded_worker.py")


def test_shards_are_whole_batches_round_robin_and_cover_every_image_once():
    assert shard_indices(10, 3, (0, 2)) == [0, 1, 2, 6, 7, 8]
    assert shard_indices(10, 3, (1, 2)) == [3, 4, 5, 9]
    assert shard_indices(4, 8, (1, 2)) == []  # more ranks than batches: an empty shard
    shards = [shard_indices(101, 7, (i, 4)) for i in range(4)]
    assert sorted(sum(shards, [])) == list(range(101))
    with pytest.raises(ValueError, match="0 <= index < count"):
        shard_indices(10, 3, (2, 2))


@pytest.mark.parametrize("count", [1, 2, 3, 9])
def test_merged_shards_equal_the_single_process_statistics(count):
    model, data = TinyNet(), random_images(n=57, num_classes=4)
    spec = CaptureSpec("conv2", top_k=6, tau=0.05, batch_size=8, sample_vectors=40, sample_seed=3)
    whole = capture(model, data, spec, progress=False).to_tensors()
    parts = [capture_partial(model, data, spec, progress=False, shard=(i, count)) for i in range(count)]
    merged = merge_partials(parts, spec).to_tensors()
    assert merged.keys() == whole.keys()
    for name, value in whole.items():
        if value.dtype == torch.float64 and count > 1:  # sums in another order
            torch.testing.assert_close(merged[name], value, rtol=1e-12, atol=1e-9)
        else:
            assert torch.equal(merged[name], value), name


def _torchrun(tmp_path, nproc, cache, *extra, env=None):
    config = tmp_path / "tiny.toml"
    config.write_text(CONFIG)
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone",
           str(WORKER), "capture", str(config), "--set", "batch_size=8", "--quiet"]
    full_env = {**os.environ, "POLYSEMY_CACHE": str(cache), "POLYSEMY_DIST_TIMEOUT": "60", **(env or {})}
    return subprocess.run(cmd + list(extra), capture_output=True, text=True, env=full_env, timeout=600)


def _captures(cache: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {p.name: load_file(p) for p in sorted((cache / "capture").glob("*.safetensors"))}


def test_two_torchrun_processes_give_the_single_process_statistics(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    single = _torchrun(tmp_path, 1, one)
    assert single.returncode == 0, single.stderr[-3000:]
    sharded = _torchrun(tmp_path, 2, two)
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    assert "over 2 processes" in sharded.stdout and sharded.stdout.count("tiny_test_net:conv2") == 1  # rank 0 only
    a, b = _captures(one), _captures(two)
    assert list(a) == list(b) and len(a) == 2  # the same entries (conv2, and act2 of a track), by the same keys
    for name, ours in a.items():
        theirs = b[name]
        assert ours.keys() == theirs.keys()
        for key, value in ours.items():
            if value.dtype == torch.float64:
                torch.testing.assert_close(theirs[key], value, rtol=0, atol=1e-6)
            else:
                assert torch.equal(theirs[key], value), key  # top-k ids, counts, samples
    again = _torchrun(tmp_path, 2, two)  # every rank finds it in the cache
    assert again.returncode == 0 and "from the cache" in again.stdout


def test_a_killed_rank_fails_the_launch_and_writes_nothing(tmp_path):
    cache = tmp_path / "cache"
    done = _torchrun(tmp_path, 2, cache, env={"POLYSEMY_TEST_KILL_RANK": "1"})
    assert done.returncode != 0
    output = done.stdout + done.stderr
    # torchrun names the rank that died (root cause); a rank that sees it first says so itself
    assert ("rank      : 1" in output and "SIGKILL" in output) or "another rank stopped" in output, output[-3000:]
    assert not cache.exists() or _captures(cache) == {}  # no capture entry was written


def test_polysemy_run_under_torchrun_is_refused_with_the_capture_command(monkeypatch, capsys):
    from benchmark.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["run", "--quiet"]) == 2
    assert "benchmark.cli capture" in capsys.readouterr().err
