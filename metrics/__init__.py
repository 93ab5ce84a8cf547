"""Metrics: one file per metric, registered in ``benchmark.core.registry.METRICS`` when imported."""
