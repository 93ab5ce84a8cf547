"""reporting: what a reader sees, as pure functions of saved results.

Leaderboard pivots (leaderboards) and their Markdown / LaTeX / CSV renderings
(table_formats), the plotting primitives (plots), the figures of a run (run_figures,
crop_figure), the statistical report (statistical_report) and the detection classifier
table (detection_table).

May import: core, storage, sources, engine, evaluation.
"""
