"""Model zoo: torchvision models by name, weights files, layer addressing errors."""
import pytest
import torch

from benchmark.core.registry import MODELS, UnknownNameError
from benchmark.engine.layers import UnknownLayerError, channel_activation, get_layer
from benchmark.sources.zoo.torchvision_models import WeightsError, load_torchvision


def test_unknown_model_name_lists_available():
    with pytest.raises(UnknownNameError, match="resnet50"):
        MODELS.get("resnet5O")


def test_weights_from_local_file_roundtrip(tmp_path):
    source = load_torchvision("resnet18")
    path = tmp_path / "resnet18-random.pth"
    torch.save(source.state_dict(), path)
    loaded = MODELS.get("resnet18")(weights=str(path))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source.eval()(x))
    assert not loaded.training


def test_wrong_shaped_weights_file_is_a_specific_error(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(load_torchvision("resnet18").state_dict(), path)
    with pytest.raises(WeightsError, match="does not fit resnet34"):
        load_torchvision("resnet34", str(path))
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        load_torchvision("resnet18", str(bad))
    with pytest.raises(WeightsError, match="does not exist"):
        load_torchvision("resnet18", str(tmp_path / "missing.pth"))


def test_offline_missing_tag_names_the_file_to_place(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsError, match=r"resnet50-0676ba61\.pth"):
        load_torchvision("resnet50", "IMAGENET1K_V1", allow_download=False)
    with pytest.raises(WeightsError, match="tags"):
        load_torchvision("resnet50", "IMAGENET_V9")


def test_layer_addressing_and_errors():
    model = load_torchvision("resnet50")
    conv = get_layer(model, "layer4.2.conv3")
    assert conv.out_channels == 2048 and conv.in_channels == 512
    with pytest.raises(UnknownLayerError, match="layer4.2.conv3"):
        get_layer(model, "layer4.2.conv4")
    with pytest.raises(IndexError, match="has 2048 channels"):
        channel_activation(model, "layer4.2.conv3", 2048, torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet101", "vgg16"])
def test_zoo_builds_every_architecture(name):
    model = MODELS.get(name)()
    assert sum(p.numel() for p in model.parameters()) > 1e6
