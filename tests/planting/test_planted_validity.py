"""Known-answer tests of the planted validity filter and the choice of planting pairs."""
from __future__ import annotations

import pytest
import torch

from benchmark.engine.layer_stats import LayerStats
from benchmark.planting.merge import choose_planting_pairs, merged_margin
from benchmark.planting.validity import ValidityRule, concept_measures, judge


def stats(output_means, importance, counts=10) -> LayerStats:
    """LayerStats with given class means (T, C) and importance counts (T, C)."""
    means = torch.tensor(output_means, dtype=torch.float64)
    t, c = means.shape
    n = torch.full((t,), counts, dtype=torch.long)
    return LayerStats(class_counts=n, input_sum=torch.zeros(t, 1, dtype=torch.float64), output_sum=means * counts,
                      top_max_ids=torch.zeros(c, 1, dtype=torch.long), top_max_values=torch.zeros(c, 1),
                      top_mean_ids=torch.zeros(c, 1, dtype=torch.long), top_mean_values=torch.zeros(c, 1),
                      importance_counts=torch.tensor(importance, dtype=torch.long),
                      attribution_sum=torch.zeros(t, c, dtype=torch.float64), tau=0.03)


def test_concept_measures_read_class_means_and_filter_shares():
    s = stats([[2.0, 0.0], [4.0, 1.0], [-1.0, 0.0]], [[10, 0], [3, 0], [0, 0]])
    m = concept_measures(s, 0, ((0, 1), (2,)))
    assert m["response_c0"] == pytest.approx(3.0) and m["response_c1"] == pytest.approx(-1.0)
    assert m["relevance_c0"] == pytest.approx(13 / 20) and m["relevance_c1"] == 0.0
    assert m["images_c0"] == 20.0


def test_judge_gives_every_reason():
    rule = ValidityRule(min_response=0.0, min_relevance_pass=0.5, min_part_share=0.2, n_ref=50)
    good = {"response_c0": 1.0, "response_c1": 2.0, "relevance_c0": 0.5, "relevance_c1": 0.9,
            "part_share_p0": 0.2, "part_share_p1": 0.8}
    assert judge(good, rule, ((0,), (1,))) == []
    bad = dict(good, response_c1=0.0, relevance_c0=0.4, part_share_p0=0.1)
    reasons = judge(bad, rule, ((0,), (1,)))
    assert len(reasons) == 3
    assert any("concept 1 (classes [1]): mean held-out response 0 <= 0" in r for r in reasons)
    assert any("concept 0 (classes [0]): relevance filter passes 0.40 of its held-out images < 0.5" in r
               for r in reasons)
    assert any("part 0 owns 0.10 of the top 50 references < 0.2" in r for r in reasons)
    with pytest.raises(ValueError, match="min_part_share must be in"):
        ValidityRule(min_part_share=1.5)
    # a network the fine-tuning broke (accuracy 0.0625 of 0.57: kept 0.11) is rejected; 0.68 kept passes
    assert judge(dict(good, accuracy_kept=0.68), rule, ((0,), (1,))) == []
    broken = judge(dict(good, accuracy_kept=0.0625 / 0.57), rule, ((0,), (1,)))
    assert broken == ["the fine-tuned network keeps 0.11 of its held-out accuracy < 0.5"]
    with pytest.raises(ValueError, match="min_accuracy_kept must be in"):
        ValidityRule(min_accuracy_kept=2.0)


def test_merged_margin_and_pair_choice_known_answer():
    # channel 0 prefers class 0, channel 1 class 2, channel 2 class 1; classes 0 and 1 are "related"
    means = [[5.0, 0.0, 0.0], [0.0, 0.0, 4.0], [0.0, 6.0, 0.0], [1.0, 1.0, 1.0]]  # (T=4, C=3)
    s = stats(means, [[0] * 3] * 4)
    profiles = torch.tensor(means).T
    # merged 0 + 1 = [5, 0, 6, 2]: classes 0 and 2 on top, next best 2: margin (5 - 2) / (6 - 0)
    assert merged_margin(profiles, 0, 1, 0, 2) == pytest.approx(0.5)
    assert merged_margin(profiles, 0, 2, 0, 1) == pytest.approx((4 - 2) / 5)
    related = {(0, 1), (1, 0)}
    chosen = choose_planting_pairs(s, 3, unrelated=lambda a, b: (a, b) not in related, max_profile_correlation=1.0)
    assert chosen[0] == ((0, 1), (0, 2))
    assert len(chosen) == 1  # every channel once


def test_within_class_pairs_pair_channels_of_one_class_with_the_least_shared_references():
    from benchmark.planting.merge import choose_within_class_pairs

    # classes 0..2; channels 0, 1, 2 prefer class 0, channels 3, 4 class 1, channel 5 class 2 (alone)
    means = torch.tensor([[5.0, 4.0, 3.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 6.0, 5.0, 0.0],
                          [0.0, 0.0, 0.0, 0.0, 0.0, 2.0]], dtype=torch.float64)
    refs = torch.tensor([[0, 1, 2, 3], [0, 1, 2, 9],   # 0 and 1 share 3 of 4 references
                         [4, 5, 6, 7],                 # 2 shares none with 0 or 1
                         [10, 11, 12, 13], [13, 14, 15, 16], [20, 21, 22, 23]])
    s = LayerStats(class_counts=torch.full((3,), 10), input_sum=torch.zeros(3, 1, dtype=torch.float64),
                   output_sum=means * 10, top_max_ids=refs, top_max_values=torch.ones(6, 4),
                   top_mean_ids=refs, top_mean_values=torch.ones(6, 4))
    # class 0: (0, 2) and (1, 2) share nothing (all selectivities are 1): the smaller channels win -> (0, 2);
    # class 1: (3, 4) share one of four -> after class 0; class 2 has one channel: no pair
    assert choose_within_class_pairs(s, 5) == [((0, 2), (0, 0)), ((3, 4), (1, 1))]
    assert choose_within_class_pairs(s, 1) == [((0, 2), (0, 0))]
    assert choose_within_class_pairs(s, 5, exclude=[2]) == [((3, 4), (1, 1)), ((0, 1), (0, 0))]
    with pytest.raises(ValueError, match="num_pairs must be >= 1"):
        choose_within_class_pairs(s, 0)
