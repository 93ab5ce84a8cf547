"""Top-1-in-category accuracy and time of the real subject models on the photos at several
input sizes (the real-model track's ``data.image_size`` trade-off).

    python scripts/real_image_size.py [--sizes 128 160 224] [--images 320] [--models ...]

Reads the FIT split (``train``; an even spread of ``--images`` images), never the held-out
images the metrics score on; the README quotes the figures this prints. Time: one forward
per batch of 32 on this machine's threads, seconds per 100 images (best of the batches'
mean), and the forward + backward-to-the-layer cost of one capture batch.
"""
from __future__ import annotations

import argparse
import time

import torch

from benchmark.core.registry import DATASETS, MODELS
from benchmark.engine.environment import _spread
from benchmark.engine.tau_calibration import relative_attributions
from benchmark.planting.merge import accuracy
from benchmark.sources.datasets import Subset

MODELS_DEFAULT = ("efficientnet_lite0_photos", "efficientnet_lite1_photos")


def measure(name: str, size: int, images: int, batch: int = 32) -> dict:
    import benchmark.sources.zoo.photos  # noqa: F401  (registers stamp_photos)

    model = MODELS.get(name)().eval()
    data = DATASETS.get("stamp_photos")(split="train", image_size=size)
    data = Subset(data, _spread(len(data), images))
    data.images(range(len(data)))  # composite once, outside the timing
    acc = accuracy(model, data, batch)
    start = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(data), batch):
            model(data.images(range(s, min(s + batch, len(data)))))
    forward = (time.perf_counter() - start) / len(data) * 100
    start = time.perf_counter()
    chunk = range(min(batch, len(data)))
    relative_attributions(model, "_conv_head", data.images(chunk), data.labels[list(chunk)])
    backward = (time.perf_counter() - start) / len(chunk) * 100
    return {"model": name, "size": size, "accuracy": acc, "forward_s_per_100": forward,
            "capture_s_per_100": backward}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 160, 224])
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--models", nargs="+", default=list(MODELS_DEFAULT))
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"{'model':30s} {'size':>5s} {'top-1':>7s} {'fwd s/100':>10s} {'capture s/100':>14s}")
    for name in args.models:
        for size in args.sizes:
            r = measure(name, size, args.images)
            print(f"{r['model']:30s} {r['size']:5d} {r['accuracy']:7.3f} {r['forward_s_per_100']:10.2f} "
                  f"{r['capture_s_per_100']:14.2f}", flush=True)


if __name__ == "__main__":
    main()
