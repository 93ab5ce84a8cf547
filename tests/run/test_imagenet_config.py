"""The packaged ImageNet/ResNet-50 config, end to end, on a tiny fake ImageNet.

Random ResNet-50 weights are saved to a file and a random open_clip checkpoint stands in
for CLIP, both loaded through the code a user with real weights runs; the JPEGs sit in
wnid folders of the published pairs' classes. The numbers are meaningless: this checks the
code path of `polysemy run imagenet_resnet50`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from benchmark.core.config import load_config
from benchmark.run.runner import Runner
from benchmark.sources.zoo.imagenet import imagenet_classes
from benchmark.sources.zoo.torchvision_models import load_torchvision

pytestmark = pytest.mark.slow


def fake_imagenet(root, class_ids, per_class=3, size=72, seed=0):
    rng = np.random.default_rng(seed)
    classes = imagenet_classes()
    for split in ("train", "val"):
        for t in class_ids:
            folder = root / split / classes[t].wnid
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{classes[t].wnid}_{i}.JPEG", quality=90)


def test_imagenet_resnet50_config_runs_end_to_end_on_a_fake(tmp_path):
    import open_clip

    published = load_config("imagenet_resnet50").tracks.pairs.pairs
    class_ids = sorted({c for _, a, b in published for c in (*a, *b)})
    fake_imagenet(tmp_path / "imagenet", class_ids)
    weights = tmp_path / "resnet50-random.pth"
    torch.manual_seed(0)
    torch.save(load_torchvision("resnet50").state_dict(), weights)
    clip = tmp_path / "clip-random.bin"
    torch.save(open_clip.create_model("ViT-S-32-alt", pretrained=None).state_dict(), clip)

    overrides = {
        "device": "cpu", "batch_size": 24, "data.root": str(tmp_path / "imagenet"), "data.image_size": 64,
        "model.weights": str(weights),
        "methods": ["arv_surgery", "pure", "identity"],
        "tracks.pairs.max_pairs": 2, "tracks.layer.num_channels": 1, "tracks.planted.num_channels": 1,
        # a random net: a short functional step and an open filter (the filter has its own tests)
        "tracks.planted.functional_steps": 2, "tracks.planted.functional_batch_size": 8,
        "tracks.planted.min_response": -1e9, "tracks.planted.min_relevance_pass": 0.0,
        "tracks.planted.min_part_share": 0.0,
        "tracks.detection.max_pairs": 6, "tracks.detection.p": 0.3,
        "method_params.pure.n_ref": 8, "method_params.pure.n_init": 2, "method_params.identity.n_ref": 8,
        "metric_params.embedding_separation.embedder_args": [["arch", "ViT-S-32-alt"], ["pretrained", str(clip)]],
        "metric_params.embedding_separation.pool_size": 8,
        "figures.fvis_steps": 4, "figures.fvis_size": 64,
    }
    config = load_config("imagenet_resnet50", overrides)
    out = Runner(config, output_dir=tmp_path / "run", progress=False).run()
    results = pd.read_csv(out / "results.csv")
    assert set(results["track"]) == {"planted", "pairs", "layer", "detection"}
    pairs = results[results.track == "pairs"]
    assert set(pairs["target"]) == {"layer4.2.conv3#522:62|687", "layer4.2.conv3#522:61|687"}
    surgery = pairs[(pairs.method == "arv_surgery") & (pairs.column == "max_abs_logit_diff")]
    assert (surgery["status"] == "ok").all() and surgery["value"].max() < 1e-3
    layer = results[(results.track == "layer") & (results.method == "pure")]
    assert set(layer["layer"]) == {"layer4"}
    clip_rows = results[results.metric.str.startswith("embedding_separation[open_clip")]
    assert len(clip_rows) > 0, "the CLIP embedder must be named in the metric label"
    assert (out / "leaderboard.md").exists() and (out / "run.json").exists()


def test_missing_data_root_is_a_specific_error(tmp_path):
    config = load_config("imagenet_resnet50", {"device": "cpu", "data.root": str(tmp_path / "nowhere")})
    with pytest.raises(FileNotFoundError, match="data.root"):
        Runner(config, output_dir=tmp_path / "run", progress=False).run()
