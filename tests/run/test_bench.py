"""`polysemy bench` runs on a tiny config and emits every figure it promises."""
import json

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
