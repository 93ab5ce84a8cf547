"""The catalogue of bad inputs: every case has a stated outcome and a test.

``CATALOGUE`` lists (input, outcome, test); the tests of cases handled elsewhere stay where
they are (named by file::function) and the new ones are below. The README's Reliability
table is checked against this list, so the documented outcome of each case is the tested
one. Config cases are refused BEFORE anything is written and before any training.
"""
from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest
import torch

from benchmark.core.config import ConfigError, load_config
from benchmark.core.errors import InputError
from benchmark.core.registry import METHODS, UnknownNameError
from benchmark.core.types import NotApplicable
from benchmark.run.runner import Runner
from tests.fakes import GOLDFISH, TENCH, contract_world, make_fake_imagenet, tiny_config

ROOT = Path(__file__).resolve().parent.parent
HERE = "tests/test_bad_inputs.py"
CATALOGUE = [
    ("an unknown layer (`--set tracks.planted.layers='[\"nope\"]'`)",
     "refused in seconds on a cold cache, naming close valid layers; nothing trained or written",
     "tests/run/test_runner.py::test_a_bad_layer_of_the_world_cnn_is_refused_before_any_training"),
    ("a layer without feature maps (`tracks.layer.layer = \"fc\"`)",
     "refused: its output shape and the model's Conv2d layers", f"{HERE}::test_a_layer_without_feature_maps"),
    ("a planted layer that is not a Conv2d", "refused, listing the Conv2d layers",
     f"{HERE}::test_a_planted_layer_that_is_not_a_conv"),
    ("an empty `tracks.planted.model_seeds`", "refused (name a seed, or leave it unset)",
     f"{HERE}::test_an_empty_model_seed_list"),
    ("a repeated or negative model seed, a negative `data.seed`, `seed >= 2^31`", "refused, naming the value",
     "tests/run/test_runner.py::test_bad_seeds_and_sources_are_refused_before_anything_is_written"),
    ("an out-of-range value (`batch_size = 0`, `capture.tau = 2`, `capture.top_k = 0`, negative counts, ...)",
     "refused, naming the key and the valid range", f"{HERE}::test_out_of_range_values"),
    ("an unknown config key, or a value of the wrong type", "refused, listing the valid keys / the expected type",
     f"{HERE}::test_unknown_keys_and_wrong_types"),
    ("an unknown method, metric or method parameter, a missing data folder",
     "refused, with close names and the valid ones",
     "tests/run/test_runner.py::test_bad_names_parameters_and_paths_are_specific_errors"),
    ("an unknown model, dataset or embedder", "refused, with close names and the valid ones",
     f"{HERE}::test_unknown_model_dataset_and_embedder"),
    ("`device = \"cuda\"` on a machine without a CUDA device", "refused (use `--set device=cpu`)",
     f"{HERE}::test_cuda_without_a_cuda_device"),
    ("k larger than the number of references (`activation_kmeans.k = 500`)", "refused: n_ref must be >= k",
     f"{HERE}::test_k_larger_than_the_references"),
    ("more references than fit images (a class or dataset smaller than the split needs)",
     "the method's error names both numbers", f"{HERE}::test_more_references_than_fit_images"),
    ("a corrupt or truncated image in an image folder",
     "stops naming the file; `data.skip_unreadable = true` leaves it out and lists it in run.json",
     "tests/sources/test_unreadable_images.py::test_a_run_stops_on_a_corrupt_image_or_skips_and_lists_it"),
    ("a zero-byte image", "named like a corrupt one", f"{HERE}::test_zero_byte_grayscale_cmyk_and_16_bit_images"),
    ("a grayscale, CMYK or 16-bit image", "converted to RGB and used",
     f"{HERE}::test_zero_byte_grayscale_cmyk_and_16_bit_images"),
    ("an empty class folder, images not sorted into class folders, an empty split",
     "refused, naming the folder", "tests/sources/test_imagenet.py::test_empty_and_flat_folders_are_specific_errors"),
    ("a folder that is not a WordNet id / a wnid WordNet does not know",
     "refused, naming the folder / the id", "tests/sources/test_wordnet.py::test_bad_wnids_are_specific_errors"),
    ("WordNet not installed", "refused with the command that installs it",
     "tests/sources/test_wordnet.py::test_missing_wordnet_raises_with_the_fix"),
    ("NaN or inf weights in a user model", "the run stops naming the parameter",
     "tests/core/test_non_finite.py::test_a_run_on_a_model_with_a_nan_weight_stops_with_the_named_error"),
    ("a channel that never activates on its references", "not applicable, with the reason; never a NaN",
     f"{HERE}::test_a_dead_channel_is_not_applicable"),
    ("a method whose virtual neurons are NaN", "every metric of that target is not applicable (\"non-finite "
     "values\"), the board shows — and never averages a NaN", f"{HERE}::test_a_method_returning_nan"),
    ("an unwritable output folder", "refused before anything runs",
     "tests/run/test_run_folder.py::test_an_unwritable_output_folder_is_refused_before_anything_runs"),
    ("an unwritable cache folder, or a file where the cache should be", "one line naming the folder",
     "tests/storage/test_cache_safety.py::test_unwritable_or_file_root_fails_with_one_line"),
    ("a full disk (ENOSPC while writing)", "one line; nothing half-written; the old run intact",
     f"{HERE}::test_a_full_disk_during_an_overwrite_leaves_the_old_run_intact"),
    ("a pickle or truncated file in a run folder's traces/", "refused by name, never unpickled",
     "tests/engine/test_traces.py::test_anything_else_in_traces_is_refused_and_never_unpickled"),
    ("`..` or markup in a target, method or image name of a run folder",
     "pages and files stay inside the report folder; text is escaped",
     f"{HERE}::test_names_from_a_run_folder_never_leave_it"),
]


def _refused(tmp_path, error, message, config="tiny", **overrides):
    out = tmp_path / "run"
    with pytest.raises(error, match=message):
        cfg = tiny_config(tmp_path, **overrides) if config == "tiny" else load_config(config, overrides)
        Runner(cfg, output_dir=out, progress=False)
    assert not out.exists()  # refused before the run folder was made


def test_the_catalogue_has_20_cases_each_with_a_test_that_exists():
    assert len(CATALOGUE) >= 20
    for _, _, node in CATALOGUE:
        path, name = node.split("::")
        tree = ast.parse((ROOT / path).read_text())
        assert name in {f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}, node


def test_the_readme_table_is_the_catalogue():
    readme = (ROOT / "README.md").read_text()
    for case, outcome, node in CATALOGUE:
        row = f"| {case} | {outcome} | `{node.split('::')[1]}` |"
        assert row in readme, row


def test_a_layer_without_feature_maps(tmp_path):
    _refused(tmp_path, ConfigError, r"tracks.layer.layer: 'fc' \(Linear\) outputs shape \(1, 16\).*Conv2d layers: stem.0",
             config="synthetic", **{"tracks.layer.layer": "fc"})


def test_a_planted_layer_that_is_not_a_conv(tmp_path):
    _refused(tmp_path, ConfigError, r"planting merges two channels of a Conv2d; 'blocks.0.relu1' is a ReLU",
             config="synthetic", **{"tracks.planted.layers": ["blocks.0.relu1"]})


def test_an_empty_model_seed_list(tmp_path):
    _refused(tmp_path, ConfigError, r"model_seeds is empty: name at least one seed",
             **{"tracks.planted.model_seeds": []})


@pytest.mark.parametrize(("key", "value", "message"), [
    ("batch_size", 0, r"batch_size must be >= 1, got 0"),
    ("capture.tau", 2.0, r"capture.tau must be in \[0, 1\], got 2.0"),
    ("capture.top_k", 0, r"capture.top_k must be >= 1, got 0"),
    ("capture.sample_vectors", -1, r"capture.sample_vectors must be >= 0"),
    ("tracks.planted.num_channels", 0, r"tracks.planted.num_channels must be >= 1"),
    ("tracks.layer.num_channels", -2, r"tracks.layer.num_channels must be >= 0 \(0 = all\), got -2"),
    ("data.fit_limit", -1, r"data.fit_limit must be >= 0"),
])
def test_out_of_range_values(tmp_path, key, value, message):
    _refused(tmp_path, ConfigError, message, **{key: value})


def test_unknown_keys_and_wrong_types(tmp_path):
    _refused(tmp_path, ConfigError, r"unknown config key 'capture.topk'; valid keys in capture: .*top_k",
             **{"capture.topk": 3})
    _refused(tmp_path, ConfigError, r"batch_size must be an integer, got 'big'", batch_size="big")
    _refused(tmp_path, ConfigError, r"figures.enabled must be true or false", **{"figures.enabled": "yes"})


def test_unknown_model_dataset_and_embedder(tmp_path):
    _refused(tmp_path, UnknownNameError, r"unknown model 'resnet9000'. Did you mean 'resnet50'",
             **{"model.name": "resnet9000"})
    _refused(tmp_path, UnknownNameError, r"unknown dataset 'imagenett'", **{"data.dataset": "imagenett"})
    _refused(tmp_path, UnknownNameError, r"unknown embedder 'clipx'. Available: judge", metrics=["embedding_separation"],
             **{"metric_params.embedding_separation.embedder": "clipx"})


def test_cuda_without_a_cuda_device(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _refused(tmp_path, ConfigError, r"device 'cuda': no CUDA device is available", device="cuda")
    _refused(tmp_path, ConfigError, r"device must be cpu, cuda or cuda:N, got 'gpu'", device="gpu")


def test_k_larger_than_the_references(tmp_path):
    _refused(tmp_path, ConfigError, r"method 'activation_kmeans': n_ref=10 must be >= k=500",
             **{"method_params.activation_kmeans.k": 500})


def test_more_references_than_fit_images():
    ctx, target = contract_world()
    with pytest.raises(InputError, match=r"n_ref=500 exceeds the 96 images of the fit dataset"):
        METHODS.get("activation_kmeans")(n_ref=500).fit(ctx, target)


def test_zero_byte_grayscale_cmyk_and_16_bit_images(tmp_path):
    from PIL import Image

    from benchmark.core.registry import DATASETS
    from benchmark.sources.datasets import UnreadableImageError

    root = tmp_path / "imagenet"
    make_fake_imagenet(root, counts={TENCH: 3, GOLDFISH: 3}, size=(20, 20))
    tench, goldfish = sorted((root / "val").iterdir())
    Image.new("L", (20, 20), 128).save(tench / "img_0.JPEG", "JPEG")
    Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(tench / "img_1.JPEG", "JPEG")  # red in CMYK
    Image.new("I;16", (20, 20), 40000).save(goldfish / "img_0.JPEG", "PNG")  # a 16-bit PNG named .JPEG
    (goldfish / "img_1.JPEG").write_bytes(b"")
    data = DATASETS.get("imagenet")(split="val", root=str(root), image_size=16)
    names = [str(root / "val" / p) for p in data.files]
    grey, cmyk = data.to_unit_range(data.images([names.index(str(tench / f"img_{i}.JPEG")) for i in (0, 1)]))
    assert grey.shape == (3, 16, 16) and torch.allclose(grey[0], grey[1], atol=0.02)  # grey: R = G = B
    assert abs(float(grey.mean()) - 128 / 255) < 0.02  # to_unit_range undoes the ImageNet normalisation
    assert cmyk[0].mean() > 0.8 and cmyk[1].mean() < 0.2  # CMYK red is red in RGB
    assert data[names.index(str(goldfish / "img_0.JPEG"))][0].shape == (3, 16, 16)
    with pytest.raises(UnreadableImageError, match=r"cannot read image .*img_1.JPEG"):
        data[names.index(str(goldfish / "img_1.JPEG"))]


def test_a_dead_channel_is_not_applicable():
    ctx, target = contract_world()
    stats = dataclasses.replace(ctx.stats, top_max_values=torch.zeros_like(ctx.stats.top_max_values))
    dead = dataclasses.replace(ctx, stats=stats)
    with pytest.raises(NotApplicable, match=rf"channel {target.channel} never activates on the fit data"):
        METHODS.get("activation_kmeans")(n_ref=16).fit(dead, target)


def test_a_method_returning_nan(tmp_path):
    import json

    from benchmark.core.plugins import Method
    from benchmark.core.types import Split
    from benchmark.reporting.leaderboards import load_results

    @dataclasses.dataclass(frozen=True)
    class NanSplit(Method):
        def fit(self, context, target):
            return Split(target=target, method="nan_split", k=2, recomposition="gating",
                         virtual_fn=lambda x: x[:, :2] * float("nan"))  # differentiable, as the contract asks

    METHODS.register("nan_split", description="test-only: NaN virtual neurons")(NanSplit)
    try:
        out = Runner(tiny_config(tmp_path, methods=["nan_split", "identity"], **{"tracks.detection.enabled": False}),
                     output_dir=tmp_path / "run", progress=False).run()
    finally:
        METHODS._entries.pop("nan_split", None)
    rows = load_results(out)
    mine = rows[rows["method"] == "nan_split"]
    assert len(mine) and mine["status"].eq("error").all() and mine["value"].isna().all()
    assert mine["reason"].str.contains("virtual neurons are NaN or inf on").all()
    board = (out / "leaderboard.md").read_text()
    assert "nan" not in board.lower().replace("nan_split", "")
    card = next(json.loads(p.read_text()) for p in (out / "cards").glob("*.json")
                if json.loads(p.read_text())["method"] == "nan_split")
    assert "NaN or inf" in card["unavailable"]


def test_names_from_a_run_folder_never_leave_it(tmp_path):
    import json
    import shutil

    from benchmark.engine.cards import prune_thumbnails
    from benchmark.reporting.html_report import write_report

    out = Runner(tiny_config(tmp_path, methods=["identity"], **{"tracks.detection.enabled": False}),
                 output_dir=tmp_path / "run", progress=False).run()
    card_path = sorted((out / "cards").glob("*.json"))[0]
    card = json.loads(card_path.read_text())
    card.update(target="../../../evil", method="../x<script>")
    card["original"][0]["thumb"] = "../../outside.webp"
    card_path.write_text(json.dumps(card))
    (tmp_path / "outside.webp").write_bytes(b"keep me")
    write_report(out)
    written = {p.resolve() for p in (out / "report").rglob("*")}
    assert all(str(p).startswith(str((out / "report").resolve())) for p in written)
    assert not list(tmp_path.glob("evil*")) and not (tmp_path.parent / "evil.html").exists()
    assert any(re.search(r"\.\._\.\._\.\._evil", p.name) for p in (out / "report" / "cards").iterdir())
    prune_thumbnails(out / "cards", out / "thumbs")  # deletes inside thumbs/ only
    assert (tmp_path / "outside.webp").read_bytes() == b"keep me"
    shutil.rmtree(out)


def test_a_full_disk_during_an_overwrite_leaves_the_old_run_intact(tmp_path, monkeypatch, capsys):
    import errno
    import os

    import benchmark.run.runner as runner_module
    from benchmark.cli import main

    old = Runner(tiny_config(tmp_path, methods=["identity"], **{"tracks.detection.enabled": False}),
                 output_dir=tmp_path / "run", progress=False).run()
    before = {p.relative_to(old): p.read_bytes() for p in old.rglob("*") if p.is_file()}
    real_write = runner_module.atomic_write
    calls = {"n": 0}

    def filling_up(path, write):
        calls["n"] += 1
        if calls["n"] < 3:
            return real_write(path, write)

        def half_then_full(tmp):  # the disk fills up in the middle of a file
            Path(tmp).write_text("half a file")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
        return real_write(path, half_then_full)

    monkeypatch.setattr(runner_module, "atomic_write", filling_up)
    code = main(["run", str(tmp_path / "tiny.toml"), "--output", str(old), "--overwrite", "--quiet",
                 "--set", "tracks.detection.enabled=false"])
    err = capsys.readouterr().err
    assert code == 2 and "No space left on device" in err and len(err.strip().splitlines()) == 1
    after = {p.relative_to(old): p.read_bytes() for p in old.rglob("*") if p.is_file()
             if ".staging" not in p.relative_to(old).parts}
    assert after == before  # the old run is untouched
    assert not [p for p in old.rglob("*.tmp")]  # nothing half-written
