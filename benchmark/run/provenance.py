"""Provenance stored with every run (as SAEBench does): config, code commit, package
versions, machine, seed, device, time."""
from __future__ import annotations

import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import torch

from benchmark.core.config import RunConfig

PACKAGES = ("polysemy-bench", "torch", "torchvision", "open-clip-torch", "nltk", "pandas", "numpy",
            "scikit-learn", "scipy", "zennit", "torch-lucent", "safetensors")


def git_commit() -> str:
    """The commit of the checkout holding this package ("unknown" outside git)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=Path(__file__).parent,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def provenance(config: RunConfig, device: torch.device) -> dict:
    return {
        "config": config.to_dict(),
        "git_commit": git_commit(),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
        "device": str(device),
        "cuda": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
        "seed": config.seed,
        "seeds": {"data": config.seeds.data, "model": config.seeds.model, "method": config.seeds.method},
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
