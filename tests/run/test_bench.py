"""`polysemy bench` runs on a tiny config and emits every figure it promises."""
import json

import pytest
import torch

from benchmark.cli import main
from benchmark.run.bench import FIELDS, bench, format_report
from tests.fakes import tiny_config  # registers the tiny test model and dataset


def test_bench_emits_every_field(tmp_path):
    config = tiny_config(tmp_path, methods=["arv_surgery", "identity"], metrics=["activation_ratio"])
    report = bench(config, images=40, progress=False)
    missing = [f for f in FIELDS if f not in report]
    assert not missing, f"bench report lacks {missing}"
    assert report["images"] == 40
    assert report["stats_bytes_n"] == report["stats_bytes_half_n"], "cached statistics must not grow with N"
    assert report["capture_overhead"] > 0 and report["attribution_speedup"] > 0
    assert set(report["method_fit_s"]) == {"arv_surgery", "identity"}
    assert "activation_ratio" in report["metric_s"]
    text = format_report(report)
    assert "capture overhead" in text and "attribution speed-up" in text


def test_bench_command_writes_json(tmp_path, capsys):
    path = tmp_path / "tiny.toml"
    tiny_config(tmp_path)  # writes tiny.toml
    out = tmp_path / "bench.json"
    code = main(["bench", str(path), "--images", "32", "--json", str(out), "--set", 'methods=["identity"]',
                 "--set", 'metrics=["residual_energy"]'])
    assert code == 0
    report = json.loads(out.read_text())
    assert all(f in report for f in FIELDS)
    assert "images/s" in capsys.readouterr().out


def test_bench_times_the_arv_pipeline_against_its_floor(tmp_path):
    config = tiny_config(tmp_path, methods=["arv_surgery"], metrics=["activation_ratio"])
    report = bench(config, images=40, progress=False)
    stages = report["pipeline_stages"]
    assert list(stages) == ["capture", "candidates", "fit", "val_ratios"]
    assert report["pipeline_pairs"] == 2  # the tiny config's two given pairs
    assert report["floor_s"] > 0 and report["floor_images"] == 96 + 64  # every fit and held-out image once
    assert abs(report["pipeline_s"] - sum(s["s"] for s in stages.values())) < 1e-9
    assert report["pipeline_floor_ratio"] == report["pipeline_s"] / report["floor_s"]
    assert "x floor" in format_report(report)


def test_the_floor_pass_builds_no_parameter_gradient():
    from benchmark.run.floor_bench import layer_floor
    from tests.fakes import TinyNet, random_images

    model = TinyNet()
    assert layer_floor(model, "conv2", [random_images(n=20, num_classes=4)], 8, torch.device("cpu")) > 0
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_each_stage_reports_its_own_peak_rss():
    from benchmark.run.floor_bench import _reset_peak, _stage

    if not _reset_peak():  # the kernel refuses the reset: per-stage peaks cannot be told apart
        pytest.fail("this Linux does not allow resetting the peak RSS (/proc/self/clear_refs)")
    _, big, _ = _stage(lambda: len(bytearray(400 * 2**20)), torch.device("cpu"))
    _, small, _ = _stage(lambda: len(bytearray(2**20)), torch.device("cpu"))
    assert big >= 400 and small < big - 300
