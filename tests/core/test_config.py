"""Configs: packaged configs parse, every key is checked, overrides go through the checks."""
import pytest

from benchmark.cli import build_parser, run_overrides
from benchmark.core.config import ConfigError, load_config, parse_override


def test_packaged_configs_parse():
    synthetic = load_config()
    assert synthetic.model.name == "world_cnn" and synthetic.tracks.layer.layer == "blocks.2"
    imagenet = load_config("imagenet_resnet50")
    assert imagenet.model.layer == "layer4.2.conv3" and imagenet.tracks.layer.layer == "layer4"
    assert len(imagenet.tracks.pairs.pairs) == 20
    assert imagenet.data.root is None  # "" means unset


def test_published_pairs_name_the_published_classes():
    from benchmark.sources.zoo.imagenet import imagenet_classes

    names = {c.index: c.name.lower() for c in imagenet_classes()}
    pairs = load_config("imagenet_resnet50").tracks.pairs.pairs
    flat = {cls for _, a, b in pairs for cls in (*a, *b)}
    expected = {62: "rock python", 61: "boa constrictor", 687: "organ", 385: "indian elephant", 834: "suit",
                631: "lotion", 946: "cardoon", 467: "butcher shop", 515: "cowboy hat", 619: "lampshade",
                846: "table lamp", 808: "sombrero", 530: "digital clock", 938: "cauliflower", 27: "eft",
                889: "violin", 486: "cello", 852: "tennis ball", 984: "rapeseed", 791: "shopping cart",
                958: "hay", 57: "garter snake", 58: "water snake", 53: "ringneck snake"}
    assert flat == set(expected)
    for index, name in expected.items():
        assert name.split()[-1] in names[index], (index, names[index], name)


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown config key 'tracks.layer.channels'.*num_channels"):
        load_config(None, {"tracks.layer.channels": 3})
    with pytest.raises(ConfigError, match="unknown config key 'colour'"):
        load_config(None, {"colour": "red"})


def test_wrong_types_are_specific():
    with pytest.raises(ConfigError, match="seed must be an integer"):
        load_config(None, {"seed": "zero"})
    with pytest.raises(ConfigError, match="enabled must be true or false"):
        load_config(None, {"tracks.planted.enabled": 1})


def test_overrides_and_missing_config(tmp_path):
    assert parse_override("tracks.layer.num_channels=4") == ("tracks.layer.num_channels", 4)
    assert parse_override("model.layer=blocks.1.conv2") == ("model.layer", "blocks.1.conv2")
    cfg = load_config(None, dict([parse_override("tracks.layer.num_channels=4")]))
    assert cfg.tracks.layer.num_channels == 4
    with pytest.raises(FileNotFoundError, match="packaged configs"):
        load_config("no_such_config")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(str(tmp_path / "x.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("seed = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(str(bad))


def test_run_flags_become_overrides():
    args = build_parser().parse_args(["run", "--methods", "pure,identity", "--targets", "2", "--tracks", "planted",
                                      "--seed", "3", "--set", "batch_size=32"])
    o = run_overrides(args)
    assert o["methods"] == ["pure", "identity"] and o["seed"] == 3 and o["batch_size"] == 32
    assert o["tracks.planted.enabled"] and not o["tracks.layer.enabled"]
    assert o["tracks.layer.num_channels"] == 2
    with pytest.raises(ValueError, match="unknown track"):
        run_overrides(build_parser().parse_args(["run", "--tracks", "plantd"]))


def test_extra_models_and_calibration_keys_parse_and_are_checked():
    from benchmark.core.config import ConfigError, load_config
    from benchmark.engine.environment import extra_model_entry

    config = load_config("real")
    assert config.model.layers == ("_conv_head", "_blocks.10._project_conv")
    assert extra_model_entry(config.model.extra[0]) == ("efficientnet_lite1_photos",
                                                        ["_conv_head", "_blocks.14._project_conv"])
    assert config.capture.important_per_image == 10.0 and config.capture.relevant_per_class == 8.0
    with pytest.raises(ConfigError, match="capture.important_per_image must be a number"):
        load_config("real", {"capture.important_per_image": "many"})
    for bad, message in (({"name": "efficientnet_lite1_photos"}, "layers must be a non-empty list"),
                         ({"name": "efficientnet_lite1_photos", "layers": "_conv_head"}, "layers must be a non-empty"),
                         ({"name": "efficientnet_lite1_photos", "layer": ["x"]}, "model.extra entries are tables"),
                         ("efficientnet_lite1_photos", "model.extra entries are tables")):
        with pytest.raises(ConfigError, match=message):
            extra_model_entry(bad)
    from benchmark.core.registry import UnknownNameError

    with pytest.raises(UnknownNameError):
        extra_model_entry({"name": "no_such_model", "layers": ["x"]})
