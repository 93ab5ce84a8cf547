"""run: executing the benchmark.

The runner (every method on every target of every track), run folders (identity, lock,
resume, atomic overwrite), provenance, the pre-flight checks, sensitivity sweeps, the
performance bench, and the captures of a run ahead of it (sharded under torchrun).

May import: every stage below it (core ... reporting); plug-ins only through the registries.
"""
