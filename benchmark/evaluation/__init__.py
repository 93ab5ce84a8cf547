"""evaluation: statistics over the tidy results table.

Per-target values, paired tests, bootstrap intervals, Holm correction and the bolding rule
(statistics), and the meta-evaluation of label-free metrics against planted truth.

May import: core, storage, sources, engine (never methods or metrics by name).
"""
