"""Planting is exact and picks class-selective channels."""
import pytest
import torch

from benchmark.engine.capture import CaptureSpec, capture
from benchmark.engine.layers import channel_activation
from benchmark.planting.merge import choose_channel_pairs, class_selectivity, plant
from benchmark.sources.zoo.torchvision_models import load_torchvision
from tests.fakes import TinyNet, random_images


def test_planted_channel_equals_sum_of_parts_and_caller_model_untouched():
    model = TinyNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    planted, truth = plant(model, "conv2", [(0, 3), (1, 4)], classes=[((0,), (1,)), ((2,), (3,))])
    x = torch.randn(5, 3, 16, 16)
    for channel, (a, b) in ((0, (0, 3)), (1, (1, 4))):
        parts = truth[channel].parts_fn(x)
        got = channel_activation(planted, "conv2", channel, x)
        torch.testing.assert_close(got, parts.sum(1), atol=1e-5, rtol=1e-5)
        # each part is the ORIGINAL channel of the caller's model
        torch.testing.assert_close(parts[:, 0], channel_activation(model, "conv2", a, x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(parts[:, 1], channel_activation(model, "conv2", b, x), atol=1e-5, rtol=1e-5)
    assert channel_activation(planted, "conv2", 3, x).abs().max() == 0
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert truth[1].classes == ((2,), (3,))


def test_planting_works_on_a_torchvision_conv_with_stride_and_bias_free():
    model = load_torchvision("resnet18")
    planted, truth = plant(model, "layer2.0.conv1", [(5, 9)])
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        got = channel_activation(planted, "layer2.0.conv1", 5, x)
        torch.testing.assert_close(got, truth[5].parts_fn(x).sum(1), atol=1e-5, rtol=1e-5)


def test_selectivity_known_answer_and_pair_choice():
    # channel 0 fires only for class 0, channel 1 only for class 1, channel 2 equally
    from benchmark.engine.layer_stats import LayerStats
    counts = torch.tensor([10, 10, 10])
    means = torch.tensor([[5.0, 0.0, 1.0], [0.0, 4.0, 1.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    z = torch.zeros(3, 1, dtype=torch.long)
    stats = LayerStats(counts, torch.zeros(3, 2, dtype=torch.float64), means * 10, z, z.float(), z, z.float())
    sel = {s.channel: s for s in class_selectivity(stats)}
    assert sel[0].top_class == 0 and sel[0].selectivity == pytest.approx(1.0)
    assert sel[1].top_class == 1 and sel[1].selectivity == pytest.approx(1.0)
    assert sel[2].selectivity == pytest.approx(0.0)
    assert choose_channel_pairs(stats, 1) == [(0, 1)]
    with pytest.raises(ValueError, match="unrelated"):
        choose_channel_pairs(stats, 1, unrelated=lambda a, b: False)


def test_plant_errors_are_specific():
    model = TinyNet()
    with pytest.raises(TypeError, match="Conv2d"):
        plant(model, "act1", [(0, 1)])
    with pytest.raises(IndexError, match="6 channels"):
        plant(model, "conv2", [(0, 6)])
    with pytest.raises(ValueError, match="one planted pair"):
        plant(model, "conv2", [(0, 1), (1, 2)])


def test_chosen_pairs_come_from_real_capture_statistics():
    model, data = TinyNet(), random_images(n=40)
    stats = capture(model, data, CaptureSpec("conv2", tau=None, top_k=3), progress=False)
    pairs = choose_channel_pairs(stats, 1)
    sel = {s.channel: s for s in class_selectivity(stats)}
    a, b = pairs[0]
    assert sel[a].top_class != sel[b].top_class


def test_pairs_with_correlated_class_profiles_are_rejected():
    from benchmark.engine.layer_stats import LayerStats
    counts = torch.tensor([10, 10, 10, 10])
    # channels 0 and 1 have different top classes but nearly the same profile over classes
    means = torch.tensor([[5.0, 4.0, 1.0], [4.0, 5.0, 1.0], [0.0, 0.0, 3.0], [0.0, 0.1, 1.0]], dtype=torch.float64)
    z = torch.zeros(3, 1, dtype=torch.long)
    stats = LayerStats(counts, torch.zeros(4, 2, dtype=torch.float64), means * 10, z, z.float(), z, z.float())
    assert choose_channel_pairs(stats, 1, max_profile_correlation=1.01) == [(0, 1)]
    assert choose_channel_pairs(stats, 1, max_profile_correlation=0.5) == [(0, 2)]


def test_candidate_relevance_keeps_only_channels_that_carry_their_class():
    from benchmark.engine.layer_stats import LayerStats
    from benchmark.planting.merge import choose_planting_pairs
    counts = torch.tensor([10, 10, 10, 10, 10])
    # channel c fires for class c only; channels 0 and 1 most strongly (they win on margin ties)
    means = torch.zeros(5, 4, dtype=torch.float64)
    for c, v in enumerate((5.0, 5.0, 3.0, 3.0)):
        means[c, c] = v
    important = torch.zeros(5, 4, dtype=torch.long)
    important[2, 2], important[3, 3] = 8, 6  # shares 0.8 and 0.6 of their class's images; 0 and 1: none
    z = torch.zeros(4, 1, dtype=torch.long)
    stats = LayerStats(counts, torch.zeros(5, 2, dtype=torch.float64), means * counts[:, None], z, z.float(), z,
                       z.float(), importance_counts=important, tau=0.03)
    assert choose_planting_pairs(stats, 1) == [((0, 1), (0, 1))]
    assert choose_planting_pairs(stats, 1, min_relevance=0.5) == [((2, 3), (2, 3))]
    assert choose_planting_pairs(stats, 2, min_relevance=0.7) == []  # only channel 2 carries its class
    with pytest.raises(ValueError, match="min_relevance must be in"):
        choose_planting_pairs(stats, 1, min_relevance=1.5)
    bare = LayerStats(counts, torch.zeros(5, 2, dtype=torch.float64), means * counts[:, None], z, z.float(), z, z.float())
    with pytest.raises(ValueError, match="importance counters"):
        choose_planting_pairs(bare, 1, min_relevance=0.5)
