"""Metrics: one file per metric, registered in ``benchmark.registry.METRICS`` when imported."""
