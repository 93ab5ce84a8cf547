"""Leaderboard tables: golden Markdown/LaTeX on a hand-made results table, uncertainty
by plain reference formulas, labels when runs are combined, atomic writes."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from benchmark.reporting.leaderboards import COLUMNS, bootstrap_ci, leaderboard, load_results, method_labels
from benchmark.reporting.table_formats import fmt_number, render, write_leaderboards


def _rows(method, metric, column, values, hib, params="{}", main=True, track="pairs",
          status=None, seeds=None, targets=None):
    out = []
    for i, v in enumerate(values):
        out.append(dict(
            track=track, model="synthnet", layer="layer3", dataset="synthetic-world",
            target=(targets or [f"layer3#{t}" for t in range(len(values))])[i], method=method,
            method_params=params, metric=metric, column=column, value=v, higher_is_better=hib,
            status=status or ("ok" if np.isfinite(v) else "not_applicable"), reason="",
            seed=(seeds or [0] * len(values))[i], main=main))
    return out


def golden_df() -> pd.DataFrame:
    """2 methods x 2 metrics x 3 targets; residual_energy does not apply to kmeans."""
    rows = []
    rows += _rows("arv_surgery", "activation_ratio", "own", [0.9, 0.8, 1.0], "true")
    rows += _rows("arv_surgery", "activation_ratio", "cross", [0.1, 0.2, 0.3], "false")
    rows += _rows("arv_surgery", "residual_energy", "energy", [0.3, 0.1, 0.2], "false")
    rows += _rows("arv_surgery", "residual_energy", "precision@0.30", [1.0, 1.0, 1.0], "", main=False)
    rows += _rows("kmeans", "activation_ratio", "own", [0.7, 0.9, 0.8], "true")
    rows += _rows("kmeans", "activation_ratio", "cross", [0.05, 0.10, 0.15], "false")
    rows += _rows("kmeans", "residual_energy", "energy", [math.nan] * 3, "false")
    return pd.DataFrame(rows, columns=list(COLUMNS))


# Hand computation (sem = sd(ddof=1) / sqrt(3)):
#   arv own   0.9 0.8 1.0  -> mean 0.900, sd 0.1,  sem 0.0577 -> "0.900 ± 0.058" (leader, higher)
#   arv cross 0.1 0.2 0.3  -> mean 0.200, sd 0.1,  sem 0.0577 -> "0.200 ± 0.058"
#   arv energy 0.3 0.1 0.2 -> mean 0.200, sd 0.1,  sem 0.0577 -> "0.200 ± 0.058" (alone: unmarked)
#   km  own   0.7 0.9 0.8  -> mean 0.800, sd 0.1,  sem 0.0577 -> "0.800 ± 0.058"
#   km  cross .05 .10 .15  -> mean 0.100, sd 0.05, sem 0.0289 -> "0.100 ± 0.029" (leader, lower)
#   km  energy: not applicable -> "—"
# Three paired targets: the smallest attainable sign-flip p is 2/8 = 0.25, so no leader is
# significant and both methods are underlined as tied leaders in own and cross.
TEST_NOTE = ("bold: the best mean among methods with a value on every target, better than every other "
             "method by a two-sided sign-flip test of paired differences on common targets "
             "(signs flipped per target, exact: all 2{caret}3 patterns), Holm-corrected over the column's pairwise comparisons ({alpha} = 0.05); underlined: "
             "leaders that test cannot separate (partial coverage is never bold)")
NOTE_MD = ("Datasets: synthetic-world. Models: synthnet. Layers: layer3. Metrics: activation_ratio; "
           "residual_energy. Cells: mean ± standard error, 3 targets, seeds averaged per "
           "target first; — not applicable; " + TEST_NOTE.format(alpha="α", caret="^") + "; ↑/↓: higher/lower is better.")
GOLDEN_MD = f"""**Leaderboard, track pairs.**

| method | activation_ratio / own ↑ | activation_ratio / cross ↓ | residual_energy / energy ↓ |
|:--|--:|--:|--:|
| arv_surgery | <u>0.900 ± 0.058</u> | <u>0.200 ± 0.058</u> | 0.200 ± 0.058 |
| kmeans | <u>0.800 ± 0.058</u> | <u>0.100 ± 0.029</u> | — |

{NOTE_MD}
"""
GOLDEN_TEX = (r"""% requires \usepackage{booktabs,graphicx}
\begin{table}[htbp]
\centering
\caption{Leaderboard, track pairs. Datasets: synthetic-world. Models: synthnet. Layers: layer3. Metrics: activation\_ratio; residual\_energy. Cells: mean $\pm$ standard error, 3 targets, seeds averaged per target first; --- not applicable; """
              + TEST_NOTE.format(alpha="$\\alpha$", caret="\\textasciicircum{}") + r"""; $\uparrow$/$\downarrow$: higher/lower is better.}
\label{tab:leaderboard-pairs}
\begin{tabular}{lccc}
\toprule
 & \multicolumn{2}{c}{activation\_ratio} & \multicolumn{1}{c}{residual\_energy} \\
\cmidrule(lr){2-3} \cmidrule(lr){4-4}
Method & own $\uparrow$ & cross $\downarrow$ & energy $\downarrow$ \\
\midrule
arv\_surgery & \underline{0.900 $\pm$ 0.058} & \underline{0.200 $\pm$ 0.058} & 0.200 $\pm$ 0.058 \\
kmeans & \underline{0.800 $\pm$ 0.058} & \underline{0.100 $\pm$ 0.029} & --- \\
\bottomrule
\end{tabular}
\end{table}
""")


def test_golden_markdown():
    assert render(leaderboard(golden_df(), uncertainty="sem"), "markdown") == GOLDEN_MD


def test_golden_latex():
    assert render(leaderboard(golden_df(), uncertainty="sem"), "latex") == GOLDEN_TEX


def test_board_numbers_and_not_applicable():
    board = leaderboard(golden_df(), uncertainty="sem")
    assert board.loc["kmeans", ("activation_ratio", "cross", "mean")] == pytest.approx(0.1)
    assert board.loc["kmeans", ("activation_ratio", "cross", "sem")] == pytest.approx(0.05 / math.sqrt(3))
    assert math.isnan(board.loc["kmeans", ("residual_energy", "energy", "mean")])  # never 0
    assert board.loc["kmeans", ("residual_energy", "energy", "n")] == 0
    assert "precision@0.30" not in board.columns.get_level_values("column")  # not a main column


def test_csv_plain_numbers():
    text = render(leaderboard(golden_df(), uncertainty="sem"), "csv")
    assert "**" not in text and "±" not in text and "\\" not in text
    back = pd.read_csv(pd.io.common.StringIO(text))
    row = back[(back.method == "kmeans") & (back.column == "cross")].iloc[0]
    assert row["mean"] == pytest.approx(0.1) and row["sem"] == pytest.approx(0.05 / math.sqrt(3))
    na = back[(back.method == "kmeans") & (back.column == "energy")].iloc[0]
    assert na["cell"] == "not_applicable" and math.isnan(na["mean"])


def test_seeds_averaged_within_target_first():
    rows = _rows("m", "x", "v", [1.0, 3.0, 5.0], "true", seeds=[0, 1, 0],
                 targets=["t0", "t0", "t1"])
    board = leaderboard(pd.DataFrame(rows), uncertainty="sem")
    # per target: t0 -> (1 + 3) / 2 = 2, t1 -> 5; mean 3.5, sem = |5 - 2| / 2 = 1.5
    assert board.loc["m", ("x", "v", "mean")] == pytest.approx(3.5)
    assert board.loc["m", ("x", "v", "sem")] == pytest.approx(1.5)


def test_bootstrap_deterministic_and_matches_reference():
    df = golden_df()
    a = leaderboard(df, uncertainty="bootstrap", seed=3)
    b = leaderboard(df, uncertainty="bootstrap", seed=3)
    pd.testing.assert_frame_equal(a, b)
    x = np.array([0.05, 0.10, 0.15])
    rng = np.random.default_rng(3)
    means = x[rng.integers(0, 3, size=(2000, 3))].mean(axis=1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    assert a.loc["kmeans", ("activation_ratio", "cross", "ci_low")] == pytest.approx(lo)
    assert a.loc["kmeans", ("activation_ratio", "cross", "ci_high")] == pytest.approx(hi)
    x = np.random.default_rng(0).normal(size=10)
    assert bootstrap_ci(x, seed=0) != bootstrap_ci(x, seed=1)
    assert "[95% percentile-bootstrap interval over targets, 2000 resamples]" in render(a)
    assert leaderboard(df).attrs["uncertainty"] == "bootstrap"  # the default


def test_ties_underlined_and_no_marks_without_direction():
    rows = _rows("a", "m", "up", [1.0, 2.0], "true") + _rows("b", "m", "up", [2.0, 1.0], "true")
    rows += _rows("a", "m", "free", [1.0, 1.0], "") + _rows("b", "m", "free", [5.0, 5.0], "")
    md = render(leaderboard(pd.DataFrame(rows), uncertainty="sem"))
    assert "| a | <u>1.500 ± 0.500</u> | 1.000 ± 0.000 |" in md
    assert "| b | <u>1.500 ± 0.500</u> | 5.000 ± 0.000 |" in md
    assert "m / free |" in md  # no arrow for a column without direction


def test_partial_and_error_cells():
    rows = _rows("a", "m", "v", [1.0, 2.0, math.nan], "true")
    rows += _rows("b", "m", "v", [math.nan] * 3, "true", status="error")
    md = render(leaderboard(pd.DataFrame(rows), uncertainty="sem"))
    assert "| a | 1.500 ± 0.500 (2/3) |" in md and "| b | error |" in md
    assert "(a/b): a value on a of the b targets scored" in md


def test_significant_winner_bold_in_markdown_and_latex():
    # 8 targets, "win" above "lose" on every one: p = 2/256 (one comparison), bold
    rows = _rows("win", "m", "v", [0.9, 0.8, 0.95, 0.85, 0.9, 0.7, 0.99, 0.93], "true")
    rows += _rows("lose", "m", "v", [0.1, 0.2, 0.15, 0.1, 0.0, 0.3, 0.2, 0.1], "true")
    rows += _rows("part", "m", "v", [1.0] + [math.nan] * 7, "true")  # best mean, 1 of 8 targets
    board = leaderboard(pd.DataFrame(rows))
    assert board.attrs["marks"][("m", "v")] == {"win": "tied", "part": "tied"}  # part is untestable
    board = leaderboard(pd.DataFrame(rows[:16]))
    assert board.attrs["marks"][("m", "v")] == {"win": "best"}
    assert "| win | **0.877 [" in render(board) and "\\textbf{0.877" in render(board, "latex")
    assert "| lose | 0.144 [" in render(board)


def test_method_labels_show_only_differing_params():
    df = pd.DataFrame(_rows("arv", "m", "v", [1.0], "true", params='{"rho": 0.5, "tau": 0.03}')
                      + _rows("arv", "m", "v", [2.0], "true", params='{"rho": 1.0, "tau": 0.03}')
                      + _rows("pure", "m", "v", [3.0], "true", params='{"k": 2}'))
    assert list(method_labels(df)) == ["arv(rho=0.5)", "arv(rho=1.0)", "pure"]
    seeds = pd.DataFrame(_rows("km", "m", "v", [1.0], "true", params='{"k": 2, "seed": 0}')
                         + _rows("km", "m", "v", [2.0], "true", params='{"k": 2, "seed": 1}')
                         + _rows("km", "m", "v", [3.0], "true", params='{"k": 3, "seed": 1, "data_seed": 4}'))
    assert list(method_labels(seeds)) == ["km(k=2)", "km(k=2)", "km(k=3)"]  # seeds are replicates


def _write_run(folder, rows):
    folder.mkdir()
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["higher_is_better"] = frame["higher_is_better"].astype(str)
    frame["main"] = frame["main"].map({True: "true", False: "false"})
    frame.to_csv(folder / "results.csv", index=False)


def test_combining_two_runs(tmp_path):
    _write_run(tmp_path / "run1", _rows("arv", "m", "v", [1.0, 2.0], "true", params='{"rho": 0.5}')
               + _rows("pure", "m", "v", [3.0, 5.0], "true", params='{"k": 2}')
               + _rows("pure", "r", "e", [math.nan, math.nan], "false", params='{"k": 2}'))
    _write_run(tmp_path / "run2", _rows("arv", "m", "v", [4.0, 6.0], "true", params='{"rho": 1.0}')
               + _rows("pure", "m", "v", [7.0, 9.0], "true", params='{"k": 2}',
                       targets=["layer3#5", "layer3#6"]))
    df = load_results([tmp_path / "run1", tmp_path / "run2"])
    assert df["value"].dtype == float and df["main"].dtype == bool and len(df) == 10
    assert df["value"].isna().sum() == 2  # empty csv cells are NaN
    board = leaderboard(df)
    assert list(board.index) == ["arv(rho=0.5)", "pure", "arv(rho=1.0)"]
    assert board.loc["arv(rho=1.0)", ("m", "v", "mean")] == pytest.approx(5.0)
    # same method and params in both runs: one row over the 4 targets (3, 5, 7, 9)
    assert board.loc["pure", ("m", "v", "mean")] == pytest.approx(6.0)
    assert board.loc["pure", ("m", "v", "n")] == 4
    # a column no method has a value for is left out instead of a column of dashes
    assert ("r", "e", "mean") not in board.columns
    assert "| arv(rho=0.5) | <u>1.500 [1.000, 2.000]</u> |\n" in render(board)


def test_bad_input_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="results.csv"):
        load_results(tmp_path)
    with pytest.raises(ValueError, match="lack columns.*'metric'"):
        leaderboard(golden_df().drop(columns=["metric"]))
    with pytest.raises(ValueError, match="unknown status"):
        leaderboard(golden_df().assign(status="fine"))
    with pytest.raises(ValueError, match="uncertainty must be one of"):
        leaderboard(golden_df(), uncertainty="std")
    two = pd.concat([golden_df(), golden_df().assign(track="layer")])
    with pytest.raises(ValueError, match="pass track="):
        leaderboard(two)
    with pytest.raises(ValueError, match="fmt must be one of"):
        render(leaderboard(golden_df()), "html")


def test_fmt_number():
    assert [fmt_number(x) for x in (0.8123, 4.21e-5, -0.0, 12345.6, 2.0)] == [
        "0.812", "4.21e-05", "0.000", "1.23e+04", "2.000"]


def test_write_leaderboards(tmp_path):
    df = pd.concat([golden_df(), golden_df().assign(track="layer")], ignore_index=True)
    paths = write_leaderboards(df, tmp_path / "out", uncertainty="sem")
    md = paths["markdown"].read_text()
    assert md.index("## Track: pairs") < md.index("## Track: layer")
    assert GOLDEN_MD in md
    assert paths["latex"].read_text().count(r"\begin{table}") == 2
    csv = pd.read_csv(paths["csv"])
    assert set(csv["track"]) == {"pairs", "layer"} and len(csv) == 2 * 2 * 3
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "leaderboard.csv", "leaderboard.md", "leaderboard.tex"]  # no temp files left


def test_table_command_combines_seeds_with_spread(tmp_path, capsys):
    from benchmark.cli import main

    # seed 0: 1, 3 -> mean 2; seed 1: 2, 6 -> mean 4; per target (1.5, 4.5) -> 3.0; seed sd = sd(2, 4)
    _write_run(tmp_path / "s0", _rows("km", "m", "v", [1.0, 3.0], "true", seeds=[0, 0]))
    _write_run(tmp_path / "s1", _rows("km", "m", "v", [2.0, 6.0], "true", seeds=[1, 1]))
    board = leaderboard(load_results([tmp_path / "s0", tmp_path / "s1"]))
    assert board.loc["km", ("m", "v", "mean")] == pytest.approx(3.0)
    assert board.loc["km", ("m", "v", "n")] == 2 and board.loc["km", ("m", "v", "n_seeds")] == 2
    assert board.loc["km", ("m", "v", "seed_sd")] == pytest.approx(math.sqrt(2))
    assert main(["table", str(tmp_path / "s0"), str(tmp_path / "s1")]) == 0
    out = capsys.readouterr().out
    assert "Seed spread" in out and "| km | 1.414 (2) |" in out
    assert main(["table", str(tmp_path / "s0"), str(tmp_path / "s1"), "--output", str(tmp_path / "both")]) == 0
    assert {"leaderboard.md", "per_target.csv", "comparisons.csv", "report.md"} <= {
        p.name for p in (tmp_path / "both").iterdir()}
    per_target = pd.read_csv(tmp_path / "both" / "per_target.csv")
    assert sorted(per_target["seed"]) == [0, 0, 1, 1]


def test_rows_without_any_value_are_left_out_and_named():
    rows = _rows("a", "m", "v", [0.5, 0.6, 0.7], "true") + _rows("b", "m", "v", [0.1, 0.2, 0.3], "true")
    rows += _rows("nothing", "m", "v", [math.nan] * 3, "true")
    text = render(leaderboard(pd.DataFrame(rows)))
    assert "| nothing |" not in text and "Not applicable in any column (rows left out): nothing." in text
    assert "nothing" not in render(leaderboard(pd.DataFrame(rows)), "latex").split("\\midrule")[1]
