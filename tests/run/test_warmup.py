"""The background warm-up of embedder weights (benchmark.run.warmup): it prepares exactly the
embedders the metrics declare, in a forked process, only with >= 2 CPU workers; a failing
warm-up is ignored and a running one can be stopped."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import ClassVar

from benchmark.core.plugins import Embedder
from benchmark.core.registry import EMBEDDERS
from benchmark.run import warmup


@EMBEDDERS.register("test_warm_embedder", description="test-only: prepare() writes a marker file")
@dataclass(frozen=True)
class _Marker(Embedder):
    prepares_weights: ClassVar[bool] = True
    path: str = ""
    mode: str = "write"

    def prepare(self) -> None:
        if self.mode == "fail":
            raise RuntimeError("a broken embedder")
        if self.mode == "sleep":
            time.sleep(60)
        import torch

        torch.randn(256, 256, 64).sum(dim=(0, 1))  # a parallel op: it hangs in a fork that kept OpenMP's team
        with open(self.path, "a") as f:
            f.write(f"{os.getpid()}\n")


def _metrics(*args_list):
    return [SimpleNamespace(instance=SimpleNamespace(embedders=lambda a=a: (("test_warm_embedder", a),)))
            for a in args_list]


def test_the_warmup_prepares_each_declared_embedder_once_in_another_process(tmp_path):
    import torch

    marker = tmp_path / "prepared"
    args = {"path": str(marker)}
    torch.set_num_threads(2)
    torch.randn(256, 256, 64).sum(dim=(0, 1))  # the parent's OpenMP thread team exists before the fork
    warm = warmup.start(_metrics(args, args), workers=2, device="cpu")  # declared twice, prepared once
    assert warm.process is not None
    warm.process.join(60)
    assert not warm.process.is_alive(), "the warm-up hangs (a parallel torch op after the fork)"
    warm.join()
    pids = marker.read_text().split()
    assert len(pids) == 1 and int(pids[0]) != os.getpid()
    for workers, device in ((1, "cpu"), (2, "cuda")):  # one process, or CUDA (no fork): nothing ahead of time
        assert warmup.start(_metrics(args), workers=workers, device=device).process is None
    assert warmup.start(_metrics(), workers=2, device="cpu").process is None
    assert warmup.embedder_specs(_metrics(args, {"path": "other"})) == [
        ("test_warm_embedder", (("path", str(marker)),)), ("test_warm_embedder", (("path", "other"),))]


def test_a_failing_warmup_is_ignored_and_a_running_one_is_stopped(tmp_path):
    failing = warmup.start(_metrics({"mode": "fail"}), workers=2, device="cpu")
    failing.join()  # no exception here: the units prepare the embedder again and raise there
    sleeping = warmup.start(_metrics({"mode": "sleep", "path": str(tmp_path / "never")}), workers=2, device="cpu")
    process = sleeping.process
    t0 = time.perf_counter()
    sleeping.stop()
    assert time.perf_counter() - t0 < 10 and not process.is_alive() and not (tmp_path / "never").exists()
