"""User mistakes are one line (exit 2); bugs keep their traceback (exit 1) and name the plug-in."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from benchmark.cli import main
from benchmark.core.errors import InputError, MissingFileError, PolysemyError
from benchmark.core.plugins import Method
from benchmark.core.registry import METHODS
from tests.fakes import CONFIG  # also registers the tiny test model and dataset

BUGGY = "buggy_test_method"


@pytest.fixture
def buggy_method():
    @dataclass(frozen=True)
    class Buggy(Method):
        """test-only: a method whose fit has a bug."""

        n_ref: int = 4

        def fit(self, context, target):
            return len(target) + 1  # the bug: a Target has no len (TypeError)

    METHODS.register(BUGGY)(Buggy)
    yield Buggy
    METHODS._entries.pop(BUGGY)


def _config(tmp_path, methods: str) -> str:
    text = CONFIG.replace('methods = ["arv_surgery", "pure", "activation_kmeans", "identity", "random_split", "oracle"]',
                          f"methods = {methods}")
    text = text.replace('metrics = ["activation_ratio", "residual_energy", "output_fidelity", "planted_recovery", '
                        '"wordnet_gamma"]', 'metrics = ["residual_energy"]')
    path = tmp_path / "buggy.toml"
    path.write_text(text)
    return str(path)


def test_a_bug_in_a_method_keeps_its_traceback_and_names_the_plugin(tmp_path, buggy_method, capsys):
    config = _config(tmp_path, f'["{BUGGY}"]')
    code = main(["run", config, "--output", str(tmp_path / "run"), "--quiet",
                 "--set", "tracks.planted.enabled=false", "--set", "tracks.detection.enabled=false",
                 "--set", "tracks.layer.enabled=false", "--set", "figures.enabled=false"])
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback (most recent call last)" in err
    assert "TypeError" in err and "has no len()" in err
    assert f'{__file__}", line' in err and "return len(target) + 1" in err  # file and line of the bug
    assert f"raised inside plug-in method '{BUGGY}'" in err
    assert err.strip().splitlines()[-1] == \
        f"polysemy run: TypeError - a bug in method '{BUGGY}' ({__name__}) (traceback above)"


def test_a_user_mistake_is_one_line_with_exit_2(tmp_path, capsys):
    assert main(["run", _config(tmp_path, '["no_such_method"]'), "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "unknown method 'no_such_method'" in err and "Available:" in err


@pytest.mark.parametrize("error", [InputError("bad value"), MissingFileError("no file")])
def test_user_errors_share_one_base_and_keep_their_builtin_kind(error):
    assert isinstance(error, PolysemyError)
    assert isinstance(error, (ValueError, FileNotFoundError))
