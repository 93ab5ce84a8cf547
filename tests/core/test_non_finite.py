"""NaN or inf weights: the capture pass names model, layer and images; metrics refuse."""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from benchmark.core.finite import NonFiniteError
from benchmark.core.registry import MODELS
from benchmark.core.types import NotApplicable, Split, Target
from benchmark.engine.capture import CaptureSpec, capture
from benchmark.run.runner import Runner
from metrics.output_fidelity import OutputFidelity
from tests.fakes import NUM_CLASSES, TinyNet, random_images, tiny_config, tiny_context


def _poisoned(where: str, value: float = float("nan")) -> TinyNet:
    model = TinyNet(num_classes=NUM_CLASSES, width=12, out=8).eval()
    with torch.no_grad():
        getattr(model, where).weight[0].view(-1)[0] = value
    model.default_layer = "conv2"
    return model


MODELS.register("tiny_nan_fc", description="test-only TinyNet with one NaN in the final layer")(
    lambda seed=0, **_: _poisoned("fc"))
MODELS.register("tiny_nan_conv", description="test-only TinyNet with one NaN in the studied conv")(
    lambda seed=0, **_: _poisoned("conv2"))


def test_nan_in_the_final_layer_names_logits_model_layer_and_images():
    data = random_images(n=10, num_classes=NUM_CLASSES)
    with pytest.raises(NonFiniteError, match=r"model 'net', layer 'conv2': non-finite logits \(NaN or inf\) "
                                             r"on 10 image\(s\) \(0, 1, 2, 3, 4 \(\+5 more\)"):
        capture(_poisoned("fc"), data, CaptureSpec("conv2", top_k=3), progress=False, model_name="net")


def test_inf_in_the_studied_conv_is_found_in_its_activations():
    data = random_images(n=6, num_classes=NUM_CLASSES)
    with pytest.raises(NonFiniteError, match="layer 'conv2': non-finite activations"):
        capture(_poisoned("conv2", float("inf")), data, CaptureSpec("conv2", top_k=3, tau=None), progress=False)


@pytest.mark.parametrize("model, what", [("tiny_nan_fc", "logits"), ("tiny_nan_conv", "activations")])
def test_a_run_on_a_model_with_a_nan_weight_stops_with_the_named_error(tmp_path, model, what, capsys):
    config = tiny_config(tmp_path, **{"model.name": model, "methods": ["identity"], "tracks.planted.enabled": False,
                                      "tracks.detection.enabled": False, "tracks.layer.enabled": False})
    with pytest.raises(NonFiniteError, match=f"model '{model}', layer 'conv2': non-finite {what}"):
        Runner(config, output_dir=tmp_path / "run", progress=False).run()
    assert not (tmp_path / "run" / "results.csv").exists()


def _rewritten(model):
    return Split(Target("tiny", "conv2", 0), "hand", 1, "surgery", lambda x: x[:, :1], residual_fn=lambda x: x,
                 model=model)


def test_output_fidelity_never_reports_agreement_on_nan_logits():
    ctx = tiny_context()
    nan_copy = copy.deepcopy(ctx.model)
    with torch.no_grad():
        nan_copy.fc.weight[0, 0] = float("nan")
    assert OutputFidelity().score(_rewritten(copy.deepcopy(ctx.model)), ctx)["top1_agreement"] == 1.0
    with pytest.raises(NotApplicable, match="non-finite values: NaN or inf in the rewritten model's logits on 24 of 24"):
        OutputFidelity().score(_rewritten(nan_copy), ctx)
    nan_ctx = dataclasses.replace(ctx, model=nan_copy)
    with pytest.raises(NotApplicable, match="non-finite values: NaN or inf in the original model's logits"):
        OutputFidelity().score(_rewritten(nan_copy), nan_ctx)
