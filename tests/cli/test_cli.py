"""The command line: list, cache, help, errors."""
import pytest

from benchmark.cli import main
from benchmark.core.registry import METHODS, METRICS
from benchmark.storage import cache_admin
from benchmark.storage.cache import Cache


def test_list_shows_every_plugin_with_its_hyperparameters(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for section in ("methods:", "metrics:", "models:", "datasets:", "embedders:", "feature_vis:"):
        assert section in out
    for name in METHODS.names() + METRICS.names():
        assert f"  {name} " in out
    assert "rho=None" in out and "n_ref=100" in out  # hyperparameters and defaults
    assert "world_cnn" in out and "synthetic_world" in out and "judge" in out


def test_list_of_an_unknown_registry_is_an_error(capsys):
    assert main(["list", "method"]) == 2
    assert "unknown registry 'method'. Available: methods" in capsys.readouterr().err


def test_cache_ls_and_clear(tmp_path, capsys):
    cache = Cache(tmp_path)
    import torch
    cache.save("capture", {"layer": "conv2"}, {"x": torch.zeros(3)})
    assert main(["cache", "ls", "--root", str(tmp_path)]) == 0
    assert "capture" in capsys.readouterr().out
    assert main(["cache", "clear", "--root", str(tmp_path)]) == 0
    assert "removed 1 cache file" in capsys.readouterr().out
    assert list(cache_admin.entries(cache)) == []


def test_help_and_bad_input_exit_codes(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    assert "run" in capsys.readouterr().out
    assert main(["run", "no_such_config"]) == 2
    assert "packaged configs" in capsys.readouterr().err
    assert main(["table", "/nonexistent/run"]) == 2
    assert "no results.csv" in capsys.readouterr().err
