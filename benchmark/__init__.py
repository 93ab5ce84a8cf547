"""polysemy-bench: a benchmark harness for disentangling polysemantic CNN channels.

The harness (this package) holds registries, models, datasets, the capture engine, the
cache, the synthetic world, the runner and the outputs. Methods live in ``methods`` and
metrics in ``metrics``; both are reached only through ``benchmark.core.registry``.
"""

__version__ = "0.1.0"
