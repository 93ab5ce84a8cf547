"""Headline tables and verdicts (benchmark/reporting/headline.py) on hand-made results."""
from __future__ import annotations

import re

import pandas as pd

from benchmark.evaluation.eligibility import headline_eligibility
from benchmark.evaluation.statistics import target_values
from benchmark.reporting.headline import MAX_COLUMNS, HeadlineSpec, headline_sections, render_headline, verdict
from benchmark.reporting.leaderboards import normalise

ROLES = {"win": "method", "lose": "method", "floor": "label_floor", "copy": "no_op", "truth": "ceiling",
         "absent": "method"}


def _rows(method, metric, column, values, hib="true", track="layer"):
    return [dict(track=track, model="net", layer="l", dataset="d", target=f"l#{t}", method=method, method_params="{}",
                 metric=metric, column=column, value=v, higher_is_better=hib, status="ok", reason="", seed=0,
                 main=True) for t, v in enumerate(values)]


def _spec(df, titles=None) -> HeadlineSpec:
    values = target_values(normalise(df))
    truths = {("planted_recovery", "ari")}
    return HeadlineSpec(roles=ROLES, citations={"win": "Doe 2024"}, titles=titles or {},
                        questions={"assignment": ("planted_recovery", "ari")},
                        eligibility=headline_eligibility(values, ROLES, truths, None))


def _results(n=12):
    rows = _rows("win", "planted_recovery", "ari", [0.9 + 0.001 * t for t in range(n)])
    rows += _rows("lose", "planted_recovery", "ari", [0.2 + 0.001 * t for t in range(n)])
    rows += _rows("floor", "planted_recovery", "ari", [0.5] * n)
    rows += _rows("copy", "planted_recovery", "ari", [0.0] * n)
    rows += _rows("truth", "planted_recovery", "ari", [1.0] * n)
    rows += [dict(r, status="not_applicable", value=float("nan")) for r in _rows("absent", "planted_recovery", "ari",
                                                                                 [0.0] * n)]
    for i in range(8):  # more label-free columns than a headline may show
        rows += _rows("win", f"extra{i}", "v", [1.0 + 0.01 * t for t in range(n)])
        rows += _rows("lose", f"extra{i}", "v", [0.5] * n)
        rows += _rows("copy", f"extra{i}", "v", [0.0] * n)
    return pd.DataFrame(rows)


def test_headline_table_is_short_bolds_only_tested_winners_and_keeps_ceilings_apart():
    df = normalise(_results())
    spec = _spec(df, titles={("planted_recovery", "ari"): "Assignment ARI"})
    table = render_headline(df, "layer", spec)
    header = next(line for line in table.splitlines() if line.startswith("| Method"))
    assert header.count("|") - 2 == MAX_COLUMNS and header.split(" | ")[1] == "Assignment ARI ↑"
    caption = table.splitlines()[0].strip("*")
    assert len(caption) <= 300 and "12 targets" in caption and "exact: all 2^12 patterns" in caption
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    names = [line.split(" | ")[0][2:] for line in lines[1:]]
    assert names == ["win [Doe 2024]", "lose", "floor (label floor)", "copy (no-op)", "truth (ceiling)"]
    assert "**0.906 [" in lines[1]  # 12 targets, 6 comparisons under Holm: the winner is bold
    assert "**" not in lines[-1]  # the ceiling takes no part in the marks
    assert "Not shown (no value in any headline column): absent." in table


def test_columns_without_a_declared_title_are_spelled_from_their_names():
    spec = HeadlineSpec(titles={("planted_recovery", "ari"): "Assignment ARI"})
    assert spec.title("planted_recovery", "ari") == "Assignment ARI"
    assert spec.title("activation_ratio", "cross_gating") == "Activation ratio: cross gating"
    assert spec.title("factor_gamma[p=0.75]", "f1") == "Factor gamma [p=0.75]: f1"


def test_verdict_states_differences_with_ci_and_p_and_the_label_floor_finding():
    df = normalise(_results())
    text = verdict(df, "layer", _spec(df, titles={("planted_recovery", "ari"): "Assignment ARI"}))
    assert text.startswith("**layer** (12 targets).")
    assert re.search(r"Assignment ARI: win leads with 0\.906; over the runner-up lose by 0\.700 \[0\.700, 0\.700\], "
                     r"p\(Holm\) = [0-9.e-]+ on 12 targets \(holds\)", text)
    assert "ceilings truth 1.000" in text
    flipped = df.copy()
    flipped.loc[(flipped["method"] == "floor") & (flipped["metric"] == "planted_recovery"), "value"] = 0.99
    assert "FINDING: no method beats the label floor floor (0.990)" in verdict(flipped, "layer", _spec(flipped))


def test_verdict_differences_point_in_the_columns_better_direction():
    from benchmark.reporting.headline import _pair
    # a - b = -0.044 on a lower-is-better column: a is better by 0.044
    cmp = pd.DataFrame([dict(metric="m", column="c", method_a="a", method_b="b", diff=-0.044, ci_low=-0.15,
                             ci_high=0.028, p_holm=1.0, significant=False, better="a", n_common=12)])
    assert _pair(cmp, ("m", "c"), "a", "b", "the runner-up", higher=False).startswith(
        "over the runner-up b by 0.044 [-0.028, 0.150], p(Holm) = 1 on 12 targets (does not hold)")
    assert _pair(cmp, ("m", "c"), "a", "b", "the runner-up", higher=True).startswith(
        "over the runner-up b by -0.044 [-0.150, 0.028]")
    swapped = cmp.assign(method_a="b", method_b="a", diff=0.044, ci_low=-0.028, ci_high=0.15)
    assert _pair(swapped, ("m", "c"), "a", "b", "the runner-up", higher=False).startswith(
        "over the runner-up b by 0.044 [-0.028, 0.150]")


def test_verdict_warns_when_no_test_can_reach_significance():
    df = normalise(_results(n=4))  # 4 targets: smallest p 2/16 = 0.125
    assert "no difference can reach significance" in verdict(df, "layer", _spec(df))


def test_sections_open_with_verdicts_then_headline_tables():
    df = normalise(_results())
    md, tex = headline_sections(df, _spec(df))
    assert md.index("## Verdicts") < md.index("## Headline tables") < md.index("### Track: layer")
    assert "\\begin{tabular}" in tex and "\\toprule" in tex and "\\textbf{0.906" in tex
