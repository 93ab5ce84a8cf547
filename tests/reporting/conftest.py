"""A small finished run shared by the HTML-report tests (the tiny config: about 20 s)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The folder of a finished tiny run (its report is written by the run itself)."""
    from benchmark.run.runner import Runner
    from tests.fakes import tiny_config

    tmp = tmp_path_factory.mktemp("tiny_report_run")
    return Runner(tiny_config(tmp), output_dir=tmp / "run", progress=False).run()
