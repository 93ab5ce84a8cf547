"""The packaged `real` config (EfficientNet-Lite0 and Lite1, two layers each, on the Tux Paint
photos), end to end on a small subset: every track on every (model, layer), every method, tau
and p calibrated per (model, layer) and recorded, the Lite2 stand-in embedder named in the
table, exact surgery, the reference-crop figures."""
from __future__ import annotations

import pandas as pd
import pytest

from benchmark.core.config import load_config
from benchmark.run.runner import Runner
from benchmark.storage.cache import Cache

pytestmark = pytest.mark.slow


def test_real_config_runs_end_to_end_on_a_small_subset(tmp_path):
    overrides = {
        "batch_size": 16, "data.fit_limit": 112, "data.heldout_limit": 32, "data.image_size": 64,
        "tracks.planted.num_channels": 1, "tracks.planted.functional_steps": 2,
        "tracks.planted.functional_batch_size": 8, "tracks.planted.min_response": -1e9,
        "tracks.planted.min_relevance_pass": 0.0, "tracks.planted.min_part_share": 0.0,
        "tracks.planted.min_accuracy_kept": 0.0, "tracks.pairs.source": "given", "tracks.pairs.pairs": [[5, [2], [4]]],
        "tracks.layer.num_channels": 1, "tracks.detection.max_pairs": 4, "tracks.detection.p": 0.3,
        "method_params.pure.n_ref": 6, "method_params.pure.n_init": 2, "method_params.pure.n_concept": 3,
        "metric_params.embedding_separation.pool_size": 12,
        "figures.fvis_steps": 2, "figures.fvis_size": 32,
    }
    config = load_config("real", overrides)
    out = Runner(config, output_dir=tmp_path / "run", cache=Cache(tmp_path / "cache"), progress=False).run()
    results = pd.read_csv(out / "results.csv")
    assert set(results["track"]) == {"planted", "pairs", "layer", "detection"}
    models = {"efficientnet_lite0_photos", "efficientnet_lite1_photos"}
    layers = {"_conv_head", "_blocks.10._project_conv", "_blocks.14._project_conv"}
    split_rows, pooled = results[results.track != "detection"], results[results.track == "detection"]
    assert {m.split("@")[0] for m in split_rows["model"]} == models
    assert set(split_rows["layer"]) == layers
    # detection pools every (model, layer): its rows name all the models and layers they pool
    assert pooled["model"].nunique() == 1 and set(pooled["model"].iloc[0].split("+")) <= models
    assert set(pooled["layer"].iloc[0].split("+")) <= layers
    for track in ("layer", "planted"):  # every (model, layer) has targets on these tracks
        mine = results[results.track == track]
        assert {(m.split("@")[0], x) for m, x in zip(mine["model"], mine["layer"])} == {
            (m, x) for m in models for x in ("_conv_head", "_blocks.10._project_conv" if "lite0" in m
                                              else "_blocks.14._project_conv")}
    import json

    calibrated = json.loads((out / "run.json").read_text())["tau_calibration"]
    assert len(calibrated) == 4 and all(0 < c["tau"] < 1 and 0 < c["p"] <= 1 for c in calibrated.values())
    assert set(results["dataset"]) == {"stamp_photos"}
    assert set(results[results.track == "pairs"]["target"]) == {"_conv_head#5:2|4"}  # given pairs: model.name
    from benchmark.core.registry import METHODS

    assert set(results["method"]) == set(METHODS.names())
    clustering = results[results.method == "activation_clustering"]["method_params"]
    assert all('"threshold_mode":"standardised"' in p for p in clustering)  # raw units fit no Lite layer
    assert any(m.startswith("embedding_separation[lite2_clip_stand_in") for m in results["metric"])
    fidelity = results[(results.method == "arv_surgery") & (results.column == "max_abs_logit_diff")
                       & (results.status == "ok")]
    assert len(fidelity) > 0 and fidelity["value"].max() < 1e-4
    assert (out / "leaderboard.md").exists()
    assert list((out / "figures").glob("reference_crops_*.png"))
