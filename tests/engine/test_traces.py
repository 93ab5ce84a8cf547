"""Traces are plain data: written as safetensors + JSON, and nothing else is ever read back."""
from __future__ import annotations

import pickle
from types import SimpleNamespace

import pytest
import torch

from benchmark.core.registry import METHODS
from benchmark.engine.traces import SUFFIX, TraceError, load_trace, save_trace
from tests.fakes import build_plugin, contract_world


class _Payload:
    """A pickle that, if ever unpickled, creates a file (the attack a shared folder could carry)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_trace_round_trips_tensors_and_metadata(tmp_path):
    ctx, target = contract_world()
    split = build_plugin(METHODS.get("oracle")).fit(ctx, target)
    path = save_trace(tmp_path / f"unit{SUFFIX}", split, SimpleNamespace(track="planted", context=ctx), ctx)
    trace = load_trace(path)
    assert trace["meta"] == {"method": "oracle", "target": target.key, "k": 2, "concepts": target.concepts,
                             "track": "planted"}
    assert trace["virtual"].shape[1] == 2 and trace["parts"].shape[1] == 2
    torch.testing.assert_close(trace["virtual"], trace["parts"])  # the oracle's neurons are the parts
    with pytest.raises(ValueError, match="ends in .safetensors"):
        save_trace(tmp_path / "unit.pt", split, SimpleNamespace(track="planted", context=ctx), ctx)


@pytest.mark.parametrize("content", ["pickle", "truncated", "foreign_safetensors"])
def test_anything_else_in_traces_is_refused_and_never_unpickled(tmp_path, content):
    marker = tmp_path / "code-ran"
    path = tmp_path / f"crafted{SUFFIX}"
    if content == "pickle":
        path.write_bytes(pickle.dumps({"meta": _Payload(marker)}))
    elif content == "truncated":
        path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    else:
        from safetensors.torch import save_file

        save_file({"x": torch.zeros(2)}, str(path))
    with pytest.raises(TraceError, match="crafted"):
        load_trace(path)
    assert not marker.exists()
