"""Feature visualisation of VIRTUAL neurons on the trained synthetic-world CNN: with every
registered backend, the rendered images activate each virtual neuron of an ARV surgery split
more than the starting noise does."""
import pytest
import torch

from benchmark.core.registry import FEATURE_VIS, METHODS
from benchmark.core.types import Context, Target
from benchmark.engine.capture import CaptureSpec, capture
from benchmark.engine.fvis._objectives import split_objective
from benchmark.sources.datasets import Subset
from benchmark.sources.world import DEFAULT_LAYER


@pytest.fixture(scope="module")
def surgery_split(world_model, world_val):
    fit = Subset(world_val, range(0, 3000, 3))  # every class (labels cycle with period 16)
    stats = capture(world_model, fit, CaptureSpec(DEFAULT_LAYER, top_k=20, tau=0.03), progress=False)
    ctx = Context(model=world_model, model_name="world_cnn", layer=DEFAULT_LAYER, fit=fit, heldout=fit,
                  stats=stats, batch_size=250)
    means = stats.output_sum / stats.class_counts[:, None]
    channel = int(means.max(0).values.argmax())  # the channel with the strongest class response
    top_two = means[:, channel].argsort(descending=True)[:2].tolist()
    target = Target("world_cnn", DEFAULT_LAYER, channel, concepts=((top_two[0],), (top_two[1],)))
    return METHODS.get("arv_surgery")().fit(ctx, target), fit


@pytest.mark.parametrize("backend", FEATURE_VIS.names())
def test_visualisation_of_virtual_neurons_raises_their_activation(backend, surgery_split):
    split, data = surgery_split
    renderer = FEATURE_VIS.get(backend)(steps=48, seed=0)
    rendering = renderer.render(split_objective(split), split.k, data.from_unit_range)
    assert rendering.images.shape == (split.k, 3, 32, 32)
    assert float(rendering.images.min()) >= 0.0 and float(rendering.images.max()) <= 1.0
    assert torch.all(rendering.end_scores > rendering.start_scores), (
        f"{backend}: objective did not rise: {rendering.start_scores} -> {rendering.end_scores}")
