"""A corrupt or truncated image: a named error, or (data.skip_unreadable) left out and listed."""
from __future__ import annotations

import json

import pandas as pd

from benchmark.cli import main
from benchmark.core.registry import DATASETS, MODELS
from benchmark.sources.datasets import UnreadableImageError
from tests.fakes import GOLDFISH, TENCH, TinyNet, make_fake_imagenet


@MODELS.register("tiny_imagenet_net", description="test-only TinyNet with 1000 outputs")
def _tiny_imagenet_net(seed: int = 0, **_):
    model = TinyNet(num_classes=1000, width=6, out=4, seed=seed).eval()
    model.default_layer = "conv2"
    return model


def _broken_imagenet(tmp_path):
    root = tmp_path / "imagenet"
    make_fake_imagenet(root, counts={TENCH: 4, GOLDFISH: 4}, size=(20, 20))
    folders = sorted((root / "val").iterdir())
    corrupt = folders[0] / "img_9.JPEG"
    corrupt.write_text("this is not a JPEG")
    good = (folders[1] / "img_0.JPEG").read_bytes()
    truncated = folders[1] / "img_8.JPEG"
    truncated.write_bytes(good[: len(good) // 2])
    return root, {str(corrupt), str(truncated)}


def test_corrupt_and_truncated_images_are_named(tmp_path):
    root, bad = _broken_imagenet(tmp_path)
    data = DATASETS.get("imagenet")(split="val", root=str(root), image_size=16)
    failures = {}
    for i in range(len(data)):
        try:
            data[i]
        except UnreadableImageError as err:
            failures[err.path] = str(err)
    assert set(failures) == bad
    assert all("data.skip_unreadable" in text for text in failures.values())


CONFIG = """
name = "unreadable"
batch_size = 4
methods = ["identity"]
metrics = ["activation_ratio"]
[model]
name = "tiny_imagenet_net"
[data]
dataset = "imagenet"
root = "{root}"
fit_split = "val"
heldout_split = "val"
image_size = 16
[capture]
top_k = 3
[tracks.planted]
enabled = false
[tracks.detection]
enabled = false
[tracks.layer]
enabled = false
[tracks.pairs]
source = "given"
pairs = [[0, [0], [1]]]
[method_params.identity]
n_ref = 3
[figures]
enabled = false
"""


def test_a_run_stops_on_a_corrupt_image_or_skips_and_lists_it(tmp_path, monkeypatch, capsys):
    root, bad = _broken_imagenet(tmp_path)
    config = tmp_path / "unreadable.toml"
    config.write_text(CONFIG.format(root=root))
    monkeypatch.setenv("POLYSEMY_CACHE", str(tmp_path / "cache"))
    run = ["run", str(config), "--output", str(tmp_path / "out"), "--quiet"]
    assert main(run) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read image" in err and "img_9.JPEG" in err
    assert main([*run, "--set", "data.skip_unreadable=true"]) == 0
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    assert set(info["skipped_images"]["val"]) == bad
    assert len(pd.read_csv(tmp_path / "out" / "results.csv")) > 0
