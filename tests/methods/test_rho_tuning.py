"""Closed-form rho tuning (methods._surgery.GridEvaluator: every grid value from one conv
over the cached layer input) against the authors' procedure (rewrite the model and run the
images through it once per rho), on a small bottleneck ResNet: its 1x1 conv3 (a masked
matmul) and its 3x3 conv2 (the batched-conv path)."""
import pytest
import torch
from torch import nn
from torchvision.models.resnet import Bottleneck

from benchmark.core.types import Context, Target
from benchmark.engine.capture import CaptureSpec, capture
from benchmark.engine.layers import get_layer, layer_activations
from benchmark.engine.relevance import concept_arvs
from methods._surgery import RHO_GRID, GridEvaluator, partition, tune_rho, tune_rho_by_forward
from methods.arv_surgery import ARVSurgery
from tests.fakes import random_images

CONCEPTS = ((0,), (1,))


class SmallResNet(nn.Module):
    """stem -> two torchvision Bottleneck blocks (1x1, 3x3, 1x1 convs, skip connections) -> fc."""

    def __init__(self, width: int = 32, planes: int = 12, num_classes: int = 4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.Sequential(Bottleneck(width, width // 4), Bottleneck(width, planes, downsample=nn.Sequential(
            nn.Conv2d(width, planes * 4, 1, bias=False), nn.BatchNorm2d(planes * 4))))
        self.fc = nn.Linear(planes * 4, num_classes)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


@pytest.fixture(scope="module")
def small_resnet():
    torch.manual_seed(0)
    model = SmallResNet().eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model, random_images(n=16, num_classes=4, size=12, seed=3)


def _per_concept(model, layer, data, side):
    out = []
    for concept in CONCEPTS:
        images = data.images(data.indices_of(list(concept)))
        out.append(images if side is None else layer_activations(model, layer, images, side=side))
    return out


@pytest.mark.parametrize("layer,channel", [("blocks.1.conv3", 5), ("blocks.1.conv2", 7)])
def test_closed_form_tuning_equals_forward_tuning(small_resnet, layer, channel):
    model, data = small_resnet
    conv = get_layer(model, layer)
    arvs, _ = concept_arvs(model, layer, data, channel, CONCEPTS, None, batch_size=8)
    with torch.no_grad():
        inputs = _per_concept(model, layer, data, "input")
    rho, scores = tune_rho(conv, channel, arvs, inputs)
    want_rho, want = tune_rho_by_forward(model, layer, channel, arvs, _per_concept(model, layer, data, None))
    assert len({round(v, 6) for v in want.values()}) > 1  # the grid matters on this channel
    assert rho == want_rho
    assert list(scores) == list(want) == list(RHO_GRID)
    for r in RHO_GRID:
        assert scores[r] == pytest.approx(want[r], rel=1e-5, abs=1e-8)
    evaluator = GridEvaluator(conv, channel, arvs)
    for r in RHO_GRID:  # the masks: every grid value maps to the reference partition
        assert torch.equal(evaluator.owner(r), partition(arvs, r))
    assert evaluator.owners.shape[0] <= len(RHO_GRID)


def test_method_uses_every_fit_image_and_the_forward_tuned_rho(small_resnet):
    model, data = small_resnet
    layer, channel = "blocks.1.conv3", 5
    stats = capture(model, data, CaptureSpec(layer, top_k=4, tau=0.05), progress=False)
    ctx = Context(model=model, model_name="small_resnet", layer=layer, fit=data, heldout=data, stats=stats,
                  batch_size=3)  # batches smaller than a concept: the sums are accumulated
    split = ARVSurgery().fit(ctx, Target("small_resnet", layer, channel, CONCEPTS))
    arvs, _ = concept_arvs(model, layer, data, channel, CONCEPTS, stats, batch_size=8)
    want_rho, want = tune_rho_by_forward(model, layer, channel, arvs, _per_concept(model, layer, data, None))
    assert split.info["rho"] == want_rho
    for r in RHO_GRID:
        assert split.info["objective"][r] == pytest.approx(want[r], rel=1e-5, abs=1e-8)
    owner = partition(arvs, want_rho)
    w = get_layer(model, layer).weight.detach()[channel]
    expanded = split.model.get_submodule(layer).expanded.weight.detach()
    assert torch.equal(expanded[channel], w * ((owner == 0) | (owner == -1))[:, None, None])
    # references: the images of each concept with the largest peak of its virtual neuron
    with torch.no_grad():
        d = split.activations(data.images(range(len(data))))
    for i, concept in enumerate(CONCEPTS):
        ids = data.indices_of(list(concept)).tolist()
        peaks = d[ids, i].flatten(1).amax(1)
        order = torch.argsort(-peaks, stable=True)[:4].tolist()
        assert list(split.reference_ids[i]) == [ids[j] for j in order]


def test_grid_evaluator_refuses_missing_concepts(small_resnet):
    model, data = small_resnet
    conv = get_layer(model, "blocks.1.conv3")
    evaluator = GridEvaluator(conv, 0, torch.randn(2, conv.in_channels, dtype=torch.float64))
    with torch.no_grad():
        evaluator.add(0, layer_activations(model, "blocks.1.conv3", data.images(range(2)), side="input"))
    with pytest.raises(ValueError, match="every concept"):
        evaluator.scores()
    with pytest.raises(ValueError, match="empty"):
        GridEvaluator(conv, 0, torch.randn(2, conv.in_channels), grid=())
